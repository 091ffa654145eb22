/* h2_int: the HTTP/2 bridge's private state, shared by its files: h2.c (the two sessions:
 * nghttp2 callbacks, output, GOAWAY, legs going away, the API), h2_stream.c (streams: heads,
 * resets, local replies, closure), h2_body.c (DATA between the legs, body inspection) and
 * h2_buf.c (the bridge's counted memory and the buffers on it). Not an API: h2.h is. */
#ifndef SLUICE_H2_INT_H
#define SLUICE_H2_INT_H

#include "h2.h"

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { DOWN = 0, UP = 1 }; /* legs: DOWN faces the client, UP the upstream */
#define OTHER(leg) (1 - (leg))

#define H2_CTYPE_MAX 127
#define H2_RULE_MAX 63
#define H2_REF_MAX 47

/* --- body buffers: a list of chunks, allocated only while bytes are in flight ------------ */

struct h2_chunk {
    struct h2_chunk *next;
    size_t off, len, cap;
    uint8_t data[];
};

struct h2_sbuf {
    struct h2_chunk *head, *tail;
    size_t len;
};

/* --- header blocks as received: "name\0value\0" bytes and field offsets ------------------ */

struct h2_field {
    uint32_t name, name_len, value, value_len;
    uint8_t flags; /* NGHTTP2_NV_FLAG_NO_INDEX is kept when forwarding */
};

struct h2_head {
    char *bytes;
    size_t len, cap;
    struct h2_field *f;
    size_t n, fcap;
    size_t size; /* the block's size as h2 counts it */
    bool too_big;
};

/* One direction of a stream's body: bytes received from the source leg that the other leg's
 * session has not taken yet, and whether the source ended (with or without trailers). */
struct h2_body {
    struct h2_sbuf buf;
    struct h2_head trailers;
    uint64_t bytes; /* payload received */
    bool eof;       /* END_STREAM received */
    bool has_trailers;
    bool drop;  /* arrivals are discarded (and consumed at once) */
    bool local; /* buf holds the gateway's own page: nothing to consume on the other leg */
    /* body inspection (h2_body_info): the hook's state, and the hold of the head */
    void *inspect;      /* NULL: not (or no longer) inspected */
    uint64_t hold;      /* bytes to inspect before the head goes on */
    uint64_t seen;      /* bytes given to on_body */
    bool holding;       /* the head waits in the stream's `held` */
    size_t preconsumed; /* bytes in buf already given back to the connection window */
};

struct h2_stream {
    struct h2_stream *prev, *next;
    int32_t id[2];  /* the stream's id on each leg; id[UP] is 0 until submitted */
    bool open[2];   /* that leg's session may still call back about it */
    bool reset[2];  /* we submitted RST_STREAM on that leg */
    bool rst_in[2]; /* RST_STREAM received from that leg (code in rst_code) */
    uint32_t rst_code[2];
    bool end_sent[2];       /* END_STREAM sent on that leg */
    struct h2_head rx[2];   /* the head (or trailers) being received from each leg */
    struct h2_head held;    /* a head waiting for its body's inspection (request, then
                             * response) */
    struct h2_body body[2]; /* body[DOWN]: the request, to UP; body[UP]: the response */
    bool head_done;         /* the request head completed */
    bool final_in;          /* a final response head arrived */
    bool resp_started;      /* a final response head (ours or the upstream's) was submitted */
    bool local_reply;
    bool rst_after_resp; /* the request is abandoned: RST(NO_ERROR) once the response is out
                          * and `discarded` reached the stream window (h2_maybe_rst_after) */
    uint32_t discarded;  /* request bytes dropped since it was abandoned */
    bool is_head;
    bool reported, end_set;
    enum h2_end end;
    uint32_t error_code;
    const char *why;
    unsigned seq;
    int status, upstream_status;
    int64_t start_us;
    char *meta; /* method, scheme, authority and path, NUL-terminated, in one allocation */
    const char *method, *scheme, *authority, *path;
    char content_type[H2_CTYPE_MAX + 1];
    char rule[H2_RULE_MAX + 1];
    char ref[H2_REF_MAX + 1];
};

/* Output toward one leg: small frames are coalesced into buf; a large frame is handed out
 * straight from nghttp2's own buffer (direct), valid until that session's next mem_send,
 * which happens only once the caller has sent all of it. At most one of the two is
 * non-empty. */
struct h2_out {
    uint8_t *buf;
    size_t off, len, cap;
    const uint8_t *direct;
    size_t dlen;
};

struct h2_bridge {
    nghttp2_session *sess[2];
    const struct h2_hooks *hooks;
    void *arg;
    struct h2_config cfg;
    struct h2_out out[2];
    struct h2_stream *streams; /* every live stream */
    size_t n_streams;
    unsigned seq;
    int32_t max_done_id;    /* highest client stream id already reported */
    bool closed[2];         /* the leg is gone (EOF or failure): its session is not driven */
    bool broken[2];         /* nghttp2 failed fatally on that leg, or a frame it produced
                             * could not be kept: nothing more may be sent on it */
    bool goaway_out[2];     /* we submitted GOAWAY on that leg */
    bool own_goaway_err[2]; /* ... with an error code (passed on from the other leg) */
    bool stopping;          /* new requests are refused */
    int fail_leg;           /* -1, or the leg whose failure finish() must still handle */
    bool fail_handled;
    const char *error;
    char errbuf[160];
    char lib_err[2][96]; /* nghttp2's last complaint about each leg */
    size_t mem, mem_peak;
    nghttp2_mem nmem;
};

/* --- h2_buf.c: counted memory, body buffers, header blocks ------------------------------- */

/* Every allocation of a bridge (nghttp2's too) goes through these: counted in b->mem, refused
 * beyond b->cfg.mem_limit (NULL). */
void *h2_mem_alloc(struct h2_bridge *b, size_t n);
void h2_mem_free(struct h2_bridge *b, void *p);
void *h2_mem_realloc(struct h2_bridge *b, void *p, size_t n);

int h2_sbuf_add(struct h2_bridge *b, struct h2_sbuf *sb, const uint8_t *p, size_t n);
size_t h2_sbuf_take(struct h2_bridge *b, struct h2_sbuf *sb, uint8_t *dst, size_t max);
size_t h2_sbuf_clear(struct h2_bridge *b, struct h2_sbuf *sb);

void h2_head_free(struct h2_bridge *b, struct h2_head *h);
int h2_head_add(struct h2_bridge *b, struct h2_head *h, const uint8_t *name, size_t nlen,
                const uint8_t *value, size_t vlen, uint8_t flags);
const char *h2_head_get(const struct h2_head *h, const char *name);
nghttp2_nv *h2_head_nva(struct h2_bridge *b, const struct h2_head *h);
struct h2_header *h2_head_regular(struct h2_bridge *b, const struct h2_head *h, size_t *n);

/* --- h2_stream.c: streams ---------------------------------------------------------------- */

void h2_copy_trunc(char *dst, size_t cap, const char *src);
struct h2_stream *h2_stream_new(struct h2_bridge *b, int32_t down_id);
struct h2_stream *h2_stream_by_up_id(struct h2_bridge *b, int32_t id);
void h2_set_end(struct h2_stream *s, enum h2_end end, uint32_t code, const char *why);
void h2_stream_report(struct h2_bridge *b, struct h2_stream *s);
void h2_stream_free(struct h2_bridge *b, struct h2_stream *s);
void h2_stream_maybe_free(struct h2_bridge *b, struct h2_stream *s);
int h2_consume(struct h2_bridge *b, int leg, int32_t id, size_t n, bool stream_level);
int h2_body_drop(struct h2_bridge *b, struct h2_stream *s, int from);
int h2_reset_leg(struct h2_bridge *b, struct h2_stream *s, int leg, uint32_t code);
int h2_maybe_rst_after(struct h2_bridge *b, struct h2_stream *s);
int h2_abandon_request(struct h2_bridge *b, struct h2_stream *s);
void h2_wake(struct h2_bridge *b, struct h2_stream *s, int to);
ssize_t h2_read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                     uint32_t *data_flags, nghttp2_data_source *source, void *ud);
int h2_reply_local(struct h2_bridge *b, struct h2_stream *s, int status);
int h2_refuse(struct h2_bridge *b, struct h2_stream *s, const char *why);
int h2_request_view(struct h2_bridge *b, const struct h2_stream *s, const struct h2_head *h,
                    bool end, struct h2_request_info *req);
int h2_open_upstream(struct h2_bridge *b, struct h2_stream *s, const struct h2_head *h, bool end);
int h2_request_head(struct h2_bridge *b, struct h2_stream *s, bool end);
int h2_trailers_in(struct h2_bridge *b, struct h2_stream *s, int leg);
int h2_response_view(struct h2_bridge *b, const struct h2_stream *s, const struct h2_head *h,
                     struct h2_exchange *x, struct h2_response_info *resp);
int h2_submit_head_down(struct h2_bridge *b, struct h2_stream *s, const struct h2_head *h,
                        bool final, bool end);
int h2_response_head(struct h2_bridge *b, struct h2_stream *s, bool end);
int h2_leg_closed(struct h2_bridge *b, struct h2_stream *s, int leg, uint32_t code);

/* --- h2_body.c: DATA, body inspection ---------------------------------------------------- */

void h2_inspect_stop(struct h2_bridge *b, struct h2_stream *s, int leg);
int h2_inspect_request(struct h2_bridge *b, struct h2_stream *s, const struct h2_head *h);
int h2_inspect_response(struct h2_bridge *b, struct h2_stream *s, const struct h2_head *h);
int h2_body_data(struct h2_bridge *b, struct h2_stream *s, int leg, const uint8_t *data,
                 size_t len);
int h2_body_ended(struct h2_bridge *b, struct h2_stream *s, int leg);

#endif
