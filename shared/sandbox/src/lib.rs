//! Process spawning and isolation for tool execution.
