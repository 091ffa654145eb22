/* http1: streaming, sans-I/O HTTP/1.1 inspector for one intercepted connection. The relay feeds
 * it the decrypted bytes of both directions; it parses them (http-parser for message heads, its
 * own strict decoder for bodies), asks hooks about each request and response, and answers how
 * many bytes may be forwarded now, or that the connection must be answered and closed, or that
 * it has become an opaque tunnel. It does no I/O, keeps no bodies unless a body hook asks it to
 * hold a message while its body is inspected, and otherwise allocates only while a head is
 * incomplete, requests are pipelined, or a path is long. See docs/HTTP1.md. */
#ifndef SLUICE_HTTP1_H
#define SLUICE_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP1_MAX_HEAD (64 * 1024) /* one message head, bytes; larger: 431 (request), 502 */
#define HTTP1_MAX_HEADERS 100      /* header lines in one head; more: 431 (request), 502 */
#define HTTP1_MAX_INFLIGHT 16      /* requests awaiting responses; later ones wait (64 KiB max) */

/* The side bytes come from. */
enum http1_side { HTTP1_CLIENT = 0, HTTP1_SERVER = 1 };

/* What a hook decides. */
enum http1_action { HTTP1_ALLOW = 0, HTTP1_BLOCK = 1 };

/* What the relay must do after a call. */
enum http1_verdict {
    HTTP1_FORWARD = 0,     /* send *forward bytes, then the pending bytes; keep going */
    HTTP1_REPLY_AND_CLOSE, /* stop; send the client its last bytes and http1_reply(); close */
    HTTP1_TUNNEL,          /* protocol switched (101, CONNECT 2xx): relay raw, stop calling */
};

/* How an exchange ended (http1_exchange.end). */
enum http1_end {
    HTTP1_END_COMPLETE = 0, /* request and response both complete */
    HTTP1_END_UPGRADED,     /* 101 or CONNECT 2xx: the connection became a tunnel */
    HTTP1_END_BLOCKED,      /* a hook blocked the request or the response: 403 page */
    HTTP1_END_BAD_REQUEST,  /* the client's message was refused (400, 431, 505) */
    HTTP1_END_BAD_RESPONSE, /* the server's message was refused (502, or a cut) */
    HTTP1_END_INCOMPLETE,   /* the connection ended before the exchange completed */
};

/* One header line as received: name and value (surrounding whitespace trimmed), not
 * NUL-terminated, pointing into the head. */
struct http1_header {
    const char *name;
    const char *value;
    size_t name_len;
    size_t value_len;
};

/* A request whose head is complete and valid. All pointers are borrowed and valid only during
 * the on_request call; strings are NUL-terminated unless said otherwise. */
struct http1_request_info {
    unsigned seq;                       /* 1 for the first request of the connection */
    const char *method;                 /* "GET", ... */
    const char *scheme;                 /* "https" */
    const char *authority;              /* host[:port]: Host, absolute-form or CONNECT target;
                                         * "" for an HTTP/1.0 request without Host */
    const char *path;                   /* target with query, no fragment: "/a?b"; "*" for
                                         * OPTIONS *; "" for CONNECT */
    int http_minor;                     /* HTTP/1.<minor>: 0 or 1 */
    int64_t content_length;             /* request body: bytes (0: none), -1 when chunked */
    int upgrade;                        /* 1: asks to switch protocols (Upgrade, or CONNECT) */
    const struct http1_header *headers; /* every header line, in order */
    size_t n_headers;
};

/* One request/response exchange, for the request log. Pointers are borrowed, valid only during
 * the hook call; strings are NUL-terminated, "" when unknown. */
struct http1_exchange {
    unsigned seq;
    const char *method; /* "" when the request line could not be parsed */
    const char *scheme; /* "https" */
    const char *authority;
    const char *path; /* with the query: dropping it is the logger's choice */
    int http_minor;
    int status;               /* what the client got: the server's final status, or the
                               * gateway's 400/403/431/502/505; 0 when nothing */
    int upstream_status;      /* the server's final status; 0 if none arrived */
    const char *content_type; /* the server's Content-Type, truncated to 127 bytes */
    uint64_t req_bytes;       /* request body bytes (payload: chunk framing not counted) */
    uint64_t resp_bytes;      /* response body bytes, the same way */
    int64_t start_us, end_us; /* request head's first byte seen, exchange ended (hooks.now_us) */
    enum http1_end end;
    const char *upgrade;    /* END_UPGRADED: the 101's Upgrade value, or "CONNECT" */
    const char *rule, *ref; /* END_BLOCKED: as the hook gave them (truncated to 63/47) */
    const char *error;      /* END_BAD_*, END_INCOMPLETE: why */
};

/* A response head, final (>= 200) or 101. Pointers borrowed, valid during on_response only. */
struct http1_response_info {
    const struct http1_exchange *req; /* the exchange so far (status fields still 0) */
    int status;
    int http_minor;
    const char *content_type; /* NUL-terminated, "" when absent, truncated to 127 bytes */
    const struct http1_header *headers;
    size_t n_headers;
};

/* A hook that returns HTTP1_BLOCK may name the rule and a reference id for the block page and
 * the log. The strings are borrowed until the hook returns (the inspector copies them). */
struct http1_block {
    const char *rule;
    const char *ref;
};

/* Body inspection. A message whose head was allowed and that has a body is offered to
 * body_begin; when it answers with a state (plan.body), the payload of that body (chunk framing
 * removed) is given to on_body before any of it is forwarded. While plan.hold bytes of payload
 * have not been inspected, the whole message — head included — is held: nothing of it is
 * forwarded, so a block is answered as if the head had been blocked (the 403 page; a request
 * never reaches the server, a response never reaches the client). A block after the message
 * started to go out (the hold ended, or plan.hold was 0) closes the connection (the other side
 * sees a cut message). */
struct http1_body_info {
    enum http1_side side;                   /* HTTP1_CLIENT: a request body; SERVER: a response's */
    const struct http1_request_info *req;   /* the request (side CLIENT), else NULL */
    const struct http1_response_info *resp; /* the response (side SERVER), else NULL */
};

struct http1_body_plan {
    void *body;    /* the hook's state for this body, passed to on_body and body_end; NULL (the
                    * default): the body is not inspected */
    uint64_t hold; /* hold the message until this many payload bytes were inspected, the body
                    * ended, or on_body said DONE; 0: forward as it comes. The held bytes (chunk
                    * framing included) never exceed 2 * hold + 64 KiB: past that the message is
                    * released. */
};

/* What on_body decides. */
enum http1_body_verdict {
    HTTP1_BODY_MORE = 0, /* go on */
    HTTP1_BODY_DONE,     /* seen enough: release the message, send no more of this body */
    HTTP1_BODY_BLOCK,    /* block (rule and reference in *blk, as for on_request) */
};

/* Hooks, all optional (NULL). They run inside http1_from_client/from_server/eof/free and must
 * not call into the same struct http1. The table is borrowed: it must outlive the inspector. */
struct http1_hooks {
    /* A request head is complete and valid; nothing of it has reached the server yet.
     * HTTP1_BLOCK: it never will; the client gets the 403 page, then the connection closes. */
    int (*on_request)(void *arg, const struct http1_request_info *req, struct http1_block *blk);
    /* A final (or 101) response head is complete; nothing of it has reached the client yet.
     * HTTP1_BLOCK: the client gets the 403 page instead, then the connection closes. */
    int (*on_response)(void *arg, const struct http1_response_info *resp, struct http1_block *blk);
    /* An exchange ended, in request order, exactly once per request whose head completed or
     * was refused; those still open when the inspector is freed are reported by http1_free. */
    void (*on_exchange)(void *arg, const struct http1_exchange *x);
    /* Renders the HTML body of the 403 page into buf[0..cap) and returns its length; 0 (or a
     * NULL hook) gives the built-in page, which names the host, the rule and the reference. */
    size_t (*block_page)(void *arg, const struct http1_exchange *x, char *buf, size_t cap);
    /* Wall-clock time in microseconds; NULL: clock_gettime(CLOCK_REALTIME). */
    int64_t (*now_us)(void *arg);
    /* Body inspection (all three or none; see struct http1_body_info). body_begin runs right
     * after on_request/on_response allowed a message that has a body; plan is zeroed. */
    void (*body_begin)(void *arg, const struct http1_body_info *info, struct http1_body_plan *plan);
    /* Payload bytes data[0..len) (borrowed for the call) of the body, in order; end: the body
     * is over (complete, or cut by its sender), len may be 0. Returns enum http1_body_verdict.
     * Not called again for the body after DONE or BLOCK, or after end. */
    int (*on_body)(void *arg, void *body, const uint8_t *data, size_t len, bool end,
                   struct http1_block *blk);
    /* The inspector is done with the body's state (after end, DONE, BLOCK, or when the message
     * or connection ends first): the hook frees it. Exactly once per state body_begin gave. */
    void (*body_end)(void *arg, void *body);
};

struct http1;

/* Creates an inspector for one connection. hooks and arg are borrowed. NULL on out-of-memory.
 * sizeof(struct http1) is under 1 KiB; an idle connection holds nothing else. */
struct http1 *http1_new(const struct http1_hooks *hooks, void *arg);

/* Reports every exchange still open to on_exchange (end INCOMPLETE, or BLOCKED/BAD_* for a
 * refusal whose reply was never due), then frees everything. NULL is a no-op. */
void http1_free(struct http1 *h);

/* Feeds buf[0..len), bytes just read from the client (len > 0). The inspector consumes all of
 * them: on return, buf[0..*forward) may be sent upstream now; the rest is held by the inspector
 * (an incomplete request head, or bytes waiting for the server's answer) or was refused, and
 * the relay may reuse buf. Held bytes come back later through http1_pending().
 *   HTTP1_FORWARD: send buf[0..*forward), then http1_pending(HTTP1_CLIENT) to the server.
 *   HTTP1_REPLY_AND_CLOSE: *forward is 0; nothing more goes to the server. Send the client what
 *     is still unsent for it (earlier forwards and http1_pending(HTTP1_SERVER)), then
 *     http1_reply() (possibly empty), then close both legs.
 *   HTTP1_TUNNEL: only once the server side switched: forward everything (as for the server).
 * A refused pipelined request whose predecessors are still awaiting their responses returns
 * HTTP1_FORWARD (bytes after the refusal are discarded): its reply comes from a later
 * http1_from_server/http1_eof, once the earlier responses have been relayed. */
enum http1_verdict http1_from_client(struct http1 *h, const uint8_t *buf, size_t len,
                                     size_t *forward);

/* Feeds bytes read from the server; the same contract towards the client:
 *   HTTP1_FORWARD: send buf[0..*forward), then http1_pending(HTTP1_SERVER) to the client.
 *   HTTP1_REPLY_AND_CLOSE: send buf[0..*forward), then http1_pending(HTTP1_SERVER), then
 *     http1_reply() (a 502, the 403 page, a client's deferred 400/403, or empty when the client
 *     already got part of the response: the cut is the signal), then close both legs.
 *   HTTP1_TUNNEL: every byte of the chunk is passed on: as *forward (== len), or as pending
 *     bytes when the 101 head had been held across chunks. From now on relay both ways raw,
 *     without calling the inspector, after sending http1_pending() of both sides (client
 *     bytes that arrived after the Upgrade/CONNECT request were held until this answer).
 * Unstalling held client bytes may run on_request hooks from inside this call. */
enum http1_verdict http1_from_server(struct http1 *h, const uint8_t *buf, size_t len,
                                     size_t *forward);

/* The side closed its sending direction (FIN or close_notify). Completes a response delimited
 * by the server's close; drops an incomplete held head. HTTP1_FORWARD: mirror the EOF as usual;
 * HTTP1_REPLY_AND_CLOSE: as above (a deferred reply became due, or a refused client has
 * nothing more to wait for); HTTP1_TUNNEL when tunnelling. */
enum http1_verdict http1_eof(struct http1 *h, enum http1_side side);

/* Pending bytes: bytes that came from `side` earlier, held by the inspector, and now released
 * to be sent to the other side. They go after everything forwarded by earlier calls and after
 * the *forward prefix of the call that released them. Returns their count and points *data at
 * them (borrowed: valid until the next call on h). The relay sends what it can and reports it
 * with http1_pending_consume(). The relay should not feed a side again before its pending
 * bytes are sent (its normal backpressure); if it does, the new chunk's bytes are queued
 * behind them (*forward is 0), so order is kept either way. */
size_t http1_pending(const struct http1 *h, enum http1_side side, const uint8_t **data);

/* Drops the first n (<= http1_pending's count) pending bytes of side, once sent. */
void http1_pending_consume(struct http1 *h, enum http1_side side, size_t n);

/* After HTTP1_REPLY_AND_CLOSE: the complete HTTP response the gateway sends the client (with
 * Connection: close), or len 0 when the connection is just to be closed. Borrowed, valid until
 * http1_free. */
void http1_reply(const struct http1 *h, const uint8_t **data, size_t *len);

/* Why the inspector refused or cut the connection (a static string for the connection log),
 * NULL when it did not. */
const char *http1_error(const struct http1 *h);

#endif
