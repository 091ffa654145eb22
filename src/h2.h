/* h2: sans-I/O HTTP/2 bridge for one intercepted connection whose two legs negotiated h2. A
 * server nghttp2 session faces the client, a client nghttp2 session faces the upstream, and
 * streams are mapped one to one: request and response heads (and trailers) are forwarded as
 * received, bodies pass as they came, flow control is carried end to end, RST_STREAM and
 * GOAWAY cross over, SETTINGS and PING are answered on each leg. Hooks see every request and
 * response head and every finished exchange, like http1's. The bridge does no I/O: the relay
 * feeds it the decrypted bytes of each leg and writes out what it has for each. See
 * docs/HTTP2.md. */
#ifndef SLUICE_H2_H
#define SLUICE_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Defaults (struct h2_config). A stream's receive window is also the bound on the bytes the
 * bridge holds for it: the peer may send that much before the other leg has taken any of it.
 * The connection window bounds the total held per direction. */
#define H2_STREAM_WINDOW (1024 * 1024)
#define H2_CONN_WINDOW (2 * 1024 * 1024)
#define H2_MAX_CONCURRENT 100           /* streams the client may open at once */
#define H2_MEM_LIMIT (64 * 1024 * 1024) /* all allocations of one bridge, nghttp2's included */
/* One head or trailer block, counted as name + value + 32 per field, and its field count;
 * a larger request head gets 431, a larger response head 502. */
#define H2_MAX_HEAD (64 * 1024)
#define H2_MAX_HEADERS 128
/* Output backlog toward a leg at which the bridge stops asking to read the other leg
 * (h2_bridge_wants_from_*). */
#define H2_OUT_HIGH (64 * 1024)

/* What a hook decides. */
enum h2_action { H2_ALLOW = 0, H2_BLOCK = 1 };

/* How an exchange ended (h2_exchange.end). */
enum h2_end {
    H2_END_COMPLETE = 0,      /* request and response both complete */
    H2_END_BLOCKED,           /* a hook blocked the request or the response: 403 page */
    H2_END_RESET_BY_CLIENT,   /* the client reset the stream (error_code) */
    H2_END_RESET_BY_UPSTREAM, /* the upstream reset the stream (error_code), passed on */
    H2_END_REFUSED,           /* refused unprocessed (GOAWAY, shutdown, limits): the client
                               * may retry it elsewhere */
    H2_END_BAD_REQUEST,       /* the client's message was refused (431, malformed) */
    H2_END_BAD_RESPONSE,      /* the upstream's message was refused (502, or a reset) */
    H2_END_INCOMPLETE,        /* a leg closed before the exchange completed */
};

/* One header field as received: lower-case name and value, not NUL-terminated. */
struct h2_header {
    const char *name;
    const char *value;
    size_t name_len;
    size_t value_len;
};

/* A request whose head is complete and valid (nghttp2 checked the pseudo-headers and refused
 * connection-specific fields). Pointers are borrowed, valid only during on_request; strings
 * are NUL-terminated, "" when absent (CONNECT has no scheme and path). */
struct h2_request_info {
    int32_t stream_id; /* the client's stream */
    unsigned seq;      /* 1 for the first request head of the connection */
    const char *method;
    const char *scheme;
    const char *authority;           /* :authority, or Host when :authority is absent */
    const char *path;                /* with the query */
    int64_t content_length;          /* request body: bytes; 0 when the head ended the stream,
                                      * -1 when unknown */
    const struct h2_header *headers; /* regular fields, in order (no pseudo-headers) */
    size_t n_headers;
};

/* One stream's exchange, for the request log. Pointers are borrowed, valid only during the
 * hook call; strings are NUL-terminated, "" when unknown. */
struct h2_exchange {
    int32_t stream_id; /* the client's stream */
    unsigned seq;
    const char *method; /* "" when the head never completed */
    const char *scheme;
    const char *authority;
    const char *path;
    int status;               /* what the client got: the upstream's final status or the
                               * gateway's 403/431/502; 0 when nothing */
    int upstream_status;      /* the upstream's final status; 0 if none arrived */
    const char *content_type; /* the upstream's content-type, truncated to 127 bytes */
    uint64_t req_bytes;       /* request body bytes received from the client */
    uint64_t resp_bytes;      /* response body bytes received from the upstream */
    int64_t start_us, end_us; /* request head began, exchange ended (hooks.now_us) */
    enum h2_end end;
    uint32_t error_code;    /* END_RESET_*, END_REFUSED, END_INCOMPLETE: the h2 error code */
    const char *rule, *ref; /* END_BLOCKED: as the hook gave them (truncated to 63/47) */
    const char *error;      /* why, when not COMPLETE */
};

/* A final response head (1xx heads are forwarded without asking). Borrowed, valid during
 * on_response only. */
struct h2_response_info {
    const struct h2_exchange *req; /* the exchange so far (status fields still 0) */
    int status;
    const char *content_type;        /* NUL-terminated, "" when absent, truncated to 127 bytes */
    const struct h2_header *headers; /* regular fields, in order */
    size_t n_headers;
};

/* A hook returning H2_BLOCK may name the rule and a reference id for the page and the log;
 * borrowed until the hook returns (the bridge copies them). */
struct h2_block {
    const char *rule;
    const char *ref;
};

/* Body inspection, like http1's (http1.h). A head allowed by on_request/on_response and
 * followed by a body is offered to body_begin; with a state (plan.body), that body's DATA is
 * given to on_body before any of it is passed on. While plan.hold bytes were not inspected the
 * head itself waits: a request is not opened upstream, a response head is not sent to the
 * client (flow control: the held bytes are given back to the sender's connection window at
 * once and to its stream window when passed on, so a held stream never stalls the others, and
 * it holds at most its stream window). A block while the head waits is answered like a blocked
 * head (the 403 page); later, the client's stream is reset and the upstream's cancelled. */
struct h2_body_info {
    bool response;                       /* false: a request body; true: a response body */
    const struct h2_request_info *req;   /* a request body: its request, else NULL */
    const struct h2_response_info *resp; /* a response body: its response, else NULL */
    uint64_t max_hold;                   /* the most the bridge can hold (the stream window) */
};

struct h2_body_plan {
    void *body;    /* the hook's state, for on_body and body_end; NULL (default): not inspected */
    uint64_t hold; /* hold the head until this many body bytes were inspected, the body ended,
                    * or on_body said DONE (capped at max_hold); 0: pass on as it comes */
};

enum h2_body_verdict {
    H2_BODY_MORE = 0, /* go on */
    H2_BODY_DONE,     /* seen enough: release the head, give no more of this body */
    H2_BODY_BLOCK,    /* block (rule and reference in *blk) */
};

/* Hooks, all optional (NULL). They run inside the h2_bridge_* calls (including
 * h2_bridge_free) and must not call into the same bridge. The table is borrowed: it must
 * outlive the bridge. */
struct h2_hooks {
    /* A request head is complete; nothing of it has reached the upstream yet. H2_BLOCK: it
     * never will; the client's stream gets the 403 page (HEADERS + DATA). */
    int (*on_request)(void *arg, const struct h2_request_info *req, struct h2_block *blk);
    /* A final response head is complete; nothing of it has reached the client yet. H2_BLOCK:
     * the client's stream gets the 403 page instead and the upstream stream is reset. */
    int (*on_response)(void *arg, const struct h2_response_info *resp, struct h2_block *blk);
    /* A stream ended for the client, exactly once per stream whose head began (except those
     * refused outright because 2 * max_concurrent streams were alive); those still open when
     * the bridge is freed are reported by h2_bridge_free (END_INCOMPLETE). */
    void (*on_exchange)(void *arg, const struct h2_exchange *x);
    /* Renders the HTML body of the 403 page into buf[0..cap) and returns its length; 0 (or a
     * NULL hook) gives the built-in page naming the host, the rule and the reference. */
    size_t (*block_page)(void *arg, const struct h2_exchange *x, char *buf, size_t cap);
    /* Wall-clock time in microseconds; NULL: clock_gettime(CLOCK_REALTIME). */
    int64_t (*now_us)(void *arg);
    /* Body inspection (all three or none; see struct h2_body_info). body_begin runs right
     * after on_request/on_response allowed a head that a body follows; plan is zeroed. */
    void (*body_begin)(void *arg, const struct h2_body_info *info, struct h2_body_plan *plan);
    /* Body bytes data[0..len) (borrowed), in order; end: the body is over (len may be 0).
     * Returns enum h2_body_verdict. Not called again after DONE, BLOCK or end. */
    int (*on_body)(void *arg, void *body, const uint8_t *data, size_t len, bool end,
                   struct h2_block *blk);
    /* The bridge is done with the state (after end, DONE or BLOCK, or when the stream ends
     * first): the hook frees it. Exactly once per state body_begin gave. */
    void (*body_end)(void *arg, void *body);
};

/* Tunables; a zero field takes its default (the H2_* constants above). */
struct h2_config {
    uint32_t stream_window;  /* SETTINGS_INITIAL_WINDOW_SIZE on both legs */
    uint32_t conn_window;    /* connection window on both legs (>= stream_window) */
    uint32_t max_concurrent; /* SETTINGS_MAX_CONCURRENT_STREAMS toward the client */
    size_t mem_limit;        /* beyond it allocations fail and the bridge fails */
};

struct h2_bridge;

/* Creates a bridge; both sessions' prefaces (SETTINGS, window updates) are pending at once.
 * hooks and arg are borrowed; cfg is copied (NULL: defaults). NULL on out-of-memory. */
struct h2_bridge *h2_bridge_new(const struct h2_hooks *hooks, void *arg,
                                const struct h2_config *cfg);

/* Reports every exchange still open to on_exchange, then frees everything. NULL is a no-op. */
void h2_bridge_free(struct h2_bridge *b);

/* Bytes read from the client / the upstream (decrypted), all consumed (data is borrowed for
 * the call only). Returns 0, or -1 when the bridge has failed (a fatal protocol error of
 * either leg, out of memory): h2_bridge_error() says why; the caller may still write out
 * what is pending (a GOAWAY naming the error), then closes both legs. */
int h2_bridge_from_client(struct h2_bridge *b, const uint8_t *data, size_t len);
int h2_bridge_from_upstream(struct h2_bridge *b, const uint8_t *data, size_t len);

/* The client / the upstream closed its side (EOF, close_notify, reset). Client: every open
 * stream is reset upstream (CANCEL) and reported, then the upstream gets GOAWAY. Upstream:
 * responses already complete are still delivered; streams never sent upstream are refused
 * (REFUSED_STREAM, the client may retry), those awaiting a response get a 502, those cut
 * mid-body are reset; then the client gets GOAWAY. Same return as above. */
int h2_bridge_eof_from_client(struct h2_bridge *b);
int h2_bridge_eof_from_upstream(struct h2_bridge *b);

/* Graceful stop (gateway shutdown): GOAWAY to both legs; streams in flight finish, new ones
 * are refused; h2_bridge_done() turns true when they have. */
void h2_bridge_shutdown(struct h2_bridge *b);

/* Output toward the client / the upstream: returns how many bytes are pending and points
 * *data at them (owned by the bridge, valid until the next call on it). The caller writes
 * what it can straight from there and reports it with h2_bridge_sent_to_*(n <= pending);
 * nothing is copied on the way out, and a side that does not drain stops being produced
 * for. */
size_t h2_bridge_pending_to_client(struct h2_bridge *b, const uint8_t **data);
void h2_bridge_sent_to_client(struct h2_bridge *b, size_t n);
size_t h2_bridge_pending_to_upstream(struct h2_bridge *b, const uint8_t **data);
void h2_bridge_sent_to_upstream(struct h2_bridge *b, size_t n);

/* Whether to read from the client / the upstream now. False once that leg is finished or the
 * bridge failed, and while the output toward the other leg is H2_OUT_HIGH or more
 * (backpressure: stop reading A while B does not drain). Flow control itself bounds what a
 * leg may send, so a true answer never lets a stream's buffer grow past its window. */
bool h2_bridge_wants_from_client(const struct h2_bridge *b);
bool h2_bridge_wants_from_upstream(const struct h2_bridge *b);

/* True when there is nothing left to do: both legs finished (GOAWAY sent or received and
 * every stream closed, or the leg hit EOF) and all output written; or the bridge failed and
 * its remaining output was written. The caller then closes both legs. */
bool h2_bridge_done(const struct h2_bridge *b);

/* Why the bridge failed (a static or bridge-owned string for the connection log), NULL when
 * it has not. */
const char *h2_bridge_error(const struct h2_bridge *b);

/* Bytes currently allocated by the bridge, its nghttp2 sessions and its buffers; and the
 * peak since h2_bridge_new. For the connection record and for tests of the memory bound. */
size_t h2_bridge_memory(const struct h2_bridge *b);
size_t h2_bridge_memory_peak(const struct h2_bridge *b);

#endif
