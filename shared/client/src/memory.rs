//! Memory-store endpoints (PROTOCOL.md §9.7): list, retrieve, create, update with a
//! `content_sha256` precondition, delete with `expected_content_sha256`. They accept a sessions
//! token (or an API key), never the environment key; the caller picks the credential.
//!
//! Nothing here retries: a sync pass decides per file what a failure means (a 409 is a
//! conflict, a 400/413 a refusal the server would repeat, anything else is tried next pass).

use hands_protocol::memory::{
    CreateMemoryRequest, DeletedMemory, Memory, MemoryListItem, MemoryView, Precondition,
    UpdateMemoryRequest,
};
use hands_protocol::work::Page;
use reqwest::Method;

use crate::client::{Call, ControlPlane, decode, segment};
use crate::credential::Credential;
use crate::error::ApiError;

/// Largest `limit` for a `basic` listing; a `full` listing holds at most 20 per page.
pub const MEMORY_LIST_PAGE_BASIC: u32 = 100;
pub const MEMORY_LIST_PAGE_FULL: u32 = 20;

fn memories_path(store_id: &str, memory_id: Option<&str>) -> String {
    match memory_id {
        None => format!("/v1/memory_stores/{}/memories", segment(store_id)),
        Some(id) => format!(
            "/v1/memory_stores/{}/memories/{}",
            segment(store_id),
            segment(id)
        ),
    }
}

fn view_str(view: MemoryView) -> &'static str {
    match view {
        MemoryView::Basic => "basic",
        MemoryView::Full => "full",
    }
}

impl ControlPlane {
    /// One page of a store's memories (every depth), in the server's order.
    pub async fn list_memories(
        &self,
        credential: &Credential,
        store_id: &str,
        view: MemoryView,
        page: Option<&str>,
    ) -> Result<Page<MemoryListItem>, ApiError> {
        let path = memories_path(store_id, None);
        let limit = match view {
            MemoryView::Basic => MEMORY_LIST_PAGE_BASIC,
            MemoryView::Full => MEMORY_LIST_PAGE_FULL,
        };
        let mut call = Call::new(Method::GET, path.clone(), credential)
            .query("view", view_str(view))
            .query("limit", limit);
        if let Some(p) = page {
            call = call.query("page", p);
        }
        let reply = self.send(call).await?;
        decode(&path, &reply.body)
    }

    /// One memory with its content.
    pub async fn get_memory(
        &self,
        credential: &Credential,
        store_id: &str,
        memory_id: &str,
    ) -> Result<Memory, ApiError> {
        let path = memories_path(store_id, Some(memory_id));
        let reply = self
            .send(Call::new(Method::GET, path.clone(), credential).query("view", "full"))
            .await?;
        decode(&path, &reply.body)
    }

    /// Creates a memory at `path` (409 when the path is taken).
    pub async fn create_memory(
        &self,
        credential: &Credential,
        store_id: &str,
        path: &str,
        content: String,
    ) -> Result<Memory, ApiError> {
        let url = memories_path(store_id, None);
        let body = CreateMemoryRequest {
            path: path.to_owned(),
            content,
        };
        let reply = self
            .send(Call::new(Method::POST, url.clone(), credential).json(&body)?)
            .await?;
        decode(&url, &reply.body)
    }

    /// Replaces a memory's content if it still has `expected_sha256` (409 otherwise).
    pub async fn update_memory(
        &self,
        credential: &Credential,
        store_id: &str,
        memory_id: &str,
        content: String,
        expected_sha256: &str,
    ) -> Result<Memory, ApiError> {
        let url = memories_path(store_id, Some(memory_id));
        let body = UpdateMemoryRequest {
            content: Some(content),
            path: None,
            precondition: Some(Precondition::ContentSha256 {
                content_sha256: expected_sha256.to_owned(),
            }),
        };
        let reply = self
            .send(Call::new(Method::POST, url.clone(), credential).json(&body)?)
            .await?;
        decode(&url, &reply.body)
    }

    /// Deletes a memory if it still has `expected_sha256` (409 otherwise).
    pub async fn delete_memory(
        &self,
        credential: &Credential,
        store_id: &str,
        memory_id: &str,
        expected_sha256: &str,
    ) -> Result<DeletedMemory, ApiError> {
        let url = memories_path(store_id, Some(memory_id));
        let reply = self
            .send(
                Call::new(Method::DELETE, url.clone(), credential)
                    .query("expected_content_sha256", expected_sha256),
            )
            .await?;
        decode(&url, &reply.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_add_segments() {
        assert_eq!(
            memories_path("memstore_1", Some("../x")),
            "/v1/memory_stores/memstore_1/memories/%2E%2E%2Fx"
        );
    }
}
