/* proxyreq: pure parser of an explicit-proxy client's request head (CONNECT or absolute-form
 * http://), built on http-parser. Bytes in, a decision out; no I/O. */
#ifndef SLUICE_PROXYREQ_H
#define SLUICE_PROXYREQ_H

#include <stddef.h>
#include <stdint.h>

#define PROXYREQ_MAX_HEAD 16384

enum proxyreq_result {
    PROXYREQ_OK = 0,        /* complete head parsed; see kind */
    PROXYREQ_NEED_MORE = 1, /* a valid prefix; read more */
    PROXYREQ_ERROR = -1,    /* refuse: answer `status` with `error` */
};

enum proxyreq_kind { PROXYREQ_CONNECT = 0, PROXYREQ_FORWARD };

struct proxyreq {
    enum proxyreq_kind kind;
    char host[256];       /* target host: name or IP literal (no brackets) */
    uint16_t port;
    size_t head_len;      /* bytes of the request head (through the blank line) */
    /* FORWARD only: the head rewritten for the origin (origin-form target, proxy headers
     * dropped, "Connection: close" added). Heap memory owned by the struct: proxyreq_free. */
    char *forward_head;
    size_t forward_len;
    char method[16];
    char target[512];     /* request target as received, truncated, for the log */
    int status;           /* ERROR only: HTTP status to answer (400, 405, 431, 501) */
    char error[160];      /* ERROR only: human reason */
};

/* Parses buf[0..len) (all bytes received so far, from the start of the connection).
 * Returns PROXYREQ_OK with req filled, NEED_MORE, or ERROR with status and error set. */
enum proxyreq_result proxyreq_parse(const char *buf, size_t len, struct proxyreq *req);

/* Frees forward_head; the struct can be reused. */
void proxyreq_free(struct proxyreq *req);

#endif
