# Sourced by instructions.sh and syscalls.sh: starting one receiver for a counter to watch, and
# reading what wrk saw answered. Not run on its own.

# receiver_command KIND BINARY PORT: sets the array `cmd` to the receiver's command line (for
# hands, also the environment `hands serve` needs to start); exits 2 for an unknown KIND.
receiver_command() {
    case $1 in
        hands)
            export ANTHROPIC_ENVIRONMENT_ID=env_bench ANTHROPIC_ENVIRONMENT_KEY=sk-bench-never-used \
                ANTHROPIC_BASE_URL=http://127.0.0.1:9
            cmd=("$2" serve --listen "127.0.0.1:$3" --drain-interval 0) ;;
        hello) cmd=("$2" "127.0.0.1:$3") ;;
        hello-direct) cmd=("$2" "127.0.0.1:$3" --direct) ;;
        *) echo "unknown receiver $1" >&2; exit 2 ;;
    esac
}

# wait_for_receiver PORT TRIES INTERVAL LOG: returns once PORT accepts a connection; after TRIES
# attempts INTERVAL seconds apart, exits 1 showing the receiver's LOG.
wait_for_receiver() {
    local _
    for _ in $(seq 1 "$2"); do
        (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep "$3"
    done
    echo "the receiver did not start; its log:" >&2
    cat "$4" >&2
    exit 1
}

# wrk_answered FILE: sets `total` (requests wrk saw answered) and `non2xx` from wrk's output.
wrk_answered() {
    total=$(grep -oE '[0-9]+ requests in' "$1" | cut -d' ' -f1)
    non2xx=$(grep -oE 'Non-2xx or 3xx responses: [0-9]+' "$1" | grep -oE '[0-9]+$')
}
