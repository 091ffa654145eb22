/* http1_int: the HTTP/1.1 inspector's private state, shared by its files: http1.c (feeds,
 * verdicts, pending queues, the client and server sides), http1_exchange.c (exchange records
 * and the gateway's replies), http1_head.c (message heads) and http1_body.c (the body decoder
 * and body inspection). Not an API: http1.h is. */
#ifndef SLUICE_HTTP1_INT_H
#define SLUICE_HTTP1_INT_H

#include "http1.h"

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define H1_STR_INLINE 160 /* authority + path kept inside the record */
#define H1_CTYPE_MAX 128

/* Where a side is in its byte stream. */
enum h1_state {
    S_HEAD = 0,      /* between messages, or inside a head (http-parser runs) */
    S_BODY,          /* Content-Length body: `remaining` bytes left */
    S_CHUNK_SIZE,    /* chunk-size hex digits */
    S_CHUNK_BWS,     /* whitespace after the size: only ';' may follow */
    S_CHUNK_EXT,     /* chunk extensions, up to CR */
    S_CHUNK_SIZE_LF, /* CR seen at the end of the size line */
    S_CHUNK_DATA,    /* `remaining` bytes of chunk data */
    S_CHUNK_DATA_CR, /* CRLF after chunk data */
    S_CHUNK_DATA_LF,
    S_TRAILER_START, /* start of a trailer line, or of the final CRLF */
    S_TRAILER_NAME,
    S_TRAILER_VALUE,
    S_TRAILER_LF,
    S_TRAILER_END_LF,
    S_BODY_EOF, /* server: body delimited by the server closing */
    S_STALLED,  /* client: bytes held unparsed until the server answers */
    S_DEAD,     /* refused, closed or finished: bytes are discarded */
};

/* Exchange record flags. */
enum {
    R_REQ_DONE = 1 << 0,     /* request message complete, refused, or cut by the client */
    R_RESP_DONE = 1 << 1,    /* final response complete */
    R_RESP_STARTED = 1 << 2, /* a final response head went to the client */
    R_UPGRADE = 1 << 3,      /* asks to switch protocols; the server has not answered yet */
    R_REFUSED = 1 << 4,      /* refused by the gateway: a reply is owed to the client */
    R_PARSED = 1 << 5,       /* the request line parsed: method and version are valid */
    R_REQ_CUT = 1 << 6,      /* the client closed in the middle of the request body */
};

struct h1_buf {
    uint8_t *p;
    size_t len, cap;
};

/* Body inspection of a side's current message (struct http1_body_plan). While holding, the
 * message's head and body bytes read so far are in the side's hold. */
struct h1_body {
    void *state;   /* the hook's; NULL: not (or no longer) inspected */
    uint64_t hold; /* payload bytes to inspect before the message goes on */
    uint64_t seen; /* payload bytes given to on_body */
    bool holding;
};

/* Payload bytes found by one h1_body_feed call. */
struct h1_span {
    size_t off, len;
};

struct h1_side {
    http_parser hp;     /* head parser, re-initialised for every message */
    uint8_t state;      /* enum h1_state */
    bool in_head;       /* hp holds a head in progress */
    uint32_t line;      /* bytes of the current chunk-size line, or of the trailer section */
    uint64_t remaining; /* Content-Length or chunk bytes left; the chunk size being read */
    struct h1_buf hold; /* an incomplete head, or (client) bytes held while stalled */
    struct h1_buf pend; /* released bytes the relay still has to send: pend.p[pend_off..] */
    size_t pend_off;
    int64_t head_start_us;
};

/* One request/response exchange in flight. Records are moved within the FIFO, so the strings
 * are found through h1_rec_authority() rather than stored pointers into inl. */
struct h1_rec {
    int64_t start_us, end_us;
    uint64_t req_bytes, resp_bytes;
    const char *why; /* static: why it was refused or cut */
    char *heap;      /* authority\0path\0 when they do not fit in inl */
    unsigned seq;
    uint32_t alen; /* authority length */
    uint16_t status, upstream_status;
    uint16_t flags; /* R_* */
    uint8_t method, http_minor;
    uint8_t end; /* enum http1_end, once decided */
    char inl[H1_STR_INLINE];
};

struct http1 {
    const struct http1_hooks *hooks;
    void *arg;
    struct h1_side side[2];
    /* FIFO of exchanges in request order: rec0 is the front (the one a response answers), the
     * rest live in `more` only while requests are pipelined. */
    struct h1_rec rec0;
    struct h1_rec *more;
    unsigned n_recs, more_cap;
    unsigned seq;
    bool client_refused; /* the back record is refused; the client side is dead */
    bool tunnel, closed;
    uint16_t gw_status; /* the status of the reply owed to a refused client */
    const char *error;
    char ctype[H1_CTYPE_MAX]; /* Content-Type of the front record's final response */
    char upgrade[32];
    char rule[64], ref[48];
    uint8_t *reply;
    size_t reply_len;
    struct h1_body body[2]; /* per side: the request or response body being read */
};

/* One feeding call: buf[emit..fwd) is forwardable, either as the *forward prefix (emit == 0)
 * or, in to_pend mode, appended to the side's pending queue when the call ends. */
struct h1_feed {
    const uint8_t *buf;
    size_t len, pos;
    size_t emit, fwd;
    bool to_pend;
    bool stop;
};

/* A complete head in contiguous memory: in the caller's chunk, or in the side's hold. */
struct h1_head {
    const char *p;
    size_t n;
    bool held;
};

/* What the rescan of a head found. */
struct h1_scan {
    struct http1_header *hdr;
    size_t n;
    const char *line; /* the start line, without CRLF */
    size_t line_len;
    const char *host, *ctype, *upgrade;
    size_t host_len, ctype_len, upgrade_len;
    unsigned n_host, n_cl, n_ctype, te_n_chunked;
    uint64_t cl;
    bool te, te_last_chunked, ctype_conflict;
    bool expect_continue; /* Expect: 100-continue */
    int status;           /* status for a refused request: 400, or 431 */
};

/* A request's authority and path, as found in its target or Host header. */
struct h1_target {
    const char *auth, *path;
    size_t alen, plen;
    bool slash; /* absolute-form without a path: the path is "/" + query */
};

/* ---- character classes (the table is in http1_head.c) ------------------------------------ */

enum { C_TCHAR = 1, C_VCHAR = 2, C_WS = 4, C_REGNAME = 8, C_HEX = 16 };

extern const uint8_t h1_cls[256];

static inline bool is_cls(char c, unsigned cls)
{
    return (h1_cls[(unsigned char)c] & cls) != 0;
}

/* ---- http1.c: buffers, feeds ------------------------------------------------------------- */

int h1_buf_append(struct h1_buf *b, const void *data, size_t n);
int h1_feed_release_head(struct h1_side *s, struct h1_feed *f, const struct h1_head *hd);

/* ---- http1_exchange.c: exchange records, gateway replies --------------------------------- */

int64_t h1_now(const struct http1 *h);
struct h1_rec *h1_rec_back(struct http1 *h);
struct h1_rec *h1_rec_awaiting(struct http1 *h);
const char *h1_rec_authority(const struct h1_rec *r);
const char *h1_rec_path(const struct h1_rec *r);
struct h1_rec *h1_rec_push(struct http1 *h);
int h1_rec_set_strs(struct h1_rec *r, const char *a, size_t alen, const char *p, size_t plen,
                    bool slash);
void h1_rec_view(const struct http1 *h, const struct h1_rec *r, struct http1_exchange *x);
void h1_rec_finish(struct http1 *h, enum http1_end end);
void h1_reply_build(struct http1 *h, const struct h1_rec *r, int status, const char *why);

/* ---- http1_head.c: message heads --------------------------------------------------------- */

enum { HEAD_MORE, HEAD_DONE, HEAD_ERROR }; /* h1_head_step */

int h1_head_step(struct h1_side *s, struct h1_feed *f, struct h1_head *hd, const char **why,
                 int *status);
const char *h1_head_scan(const char *p, size_t n, struct h1_scan *sc);
const char *h1_request_check(const struct h1_side *s, const struct h1_scan *sc,
                             struct h1_target *tg, int *status);
const char *h1_response_check(const struct h1_rec *r, const struct h1_side *s,
                              const struct h1_scan *sc);

/* ---- http1_body.c: the body decoder, body inspection ------------------------------------- */

int h1_body_feed(struct h1_side *s, const uint8_t *buf, size_t len, size_t *pos, uint64_t *payload,
                 const char **why, struct h1_span *data);
void h1_body_reset(struct http1 *h, enum http1_side side);
void h1_body_begin(struct http1 *h, const struct http1_body_info *info);
int h1_body_hold_head(struct h1_side *s, const struct h1_head *hd);
int h1_body_deliver(struct http1 *h, enum http1_side side, const uint8_t *p, size_t n, bool end);
int h1_body_release(struct http1 *h, enum http1_side side, struct h1_feed *f);
int h1_body_after_step(struct http1 *h, enum http1_side side, struct h1_feed *f, size_t start,
                       bool end);

#endif
