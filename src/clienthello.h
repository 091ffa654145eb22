/* clienthello: pure parser of the raw bytes a TLS client sends first. No I/O. */
#ifndef SLUICE_CLIENTHELLO_H
#define SLUICE_CLIENTHELLO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest ClientHello handshake message accepted (post-quantum hellos exceed one segment). */
#define CLIENTHELLO_MAX 65536

enum clienthello_result {
    CLIENTHELLO_OK = 0,         /* a complete ClientHello was parsed */
    CLIENTHELLO_NEED_MORE = 1,  /* looks like TLS so far; more bytes needed */
    CLIENTHELLO_NOT_TLS = -1,   /* first bytes are not a TLS handshake record */
    CLIENTHELLO_MALFORMED = -2, /* TLS record framing but the hello is invalid */
    CLIENTHELLO_TOO_BIG = -3,   /* handshake message longer than CLIENTHELLO_MAX */
};

struct clienthello {
    uint16_t record_version; /* version in the first record header */
    uint16_t legacy_version; /* client_version field */
    bool has_sni;
    char sni[256];     /* host_name, NUL-terminated, as sent (not lower-cased) */
    size_t alpn_len;   /* length of alpn (wire format: len-prefixed strings) */
    uint8_t alpn[512]; /* longer lists are not MALFORMED: the whole entries that fit are kept */
    size_t n_versions; /* supported_versions extension entries */
    uint16_t versions[16];
    size_t n_suites;  /* number of cipher suites offered */
    size_t hello_len; /* total bytes of records that carried the hello */
};

/* Parses buf[0..len). Handles a hello split across several TLS records and partial input.
 * Never reads past len. On CLIENTHELLO_OK, out is filled. */
enum clienthello_result clienthello_parse(const uint8_t *buf, size_t len, struct clienthello *out);

/* True when the ALPN list in hello offers protocol proto (e.g. "h2"). */
bool clienthello_offers_alpn(const struct clienthello *hello, const char *proto);

/* The same for an ALPN list in wire format (list may be NULL when len is 0). */
bool clienthello_alpn_list_has(const uint8_t *list, size_t len, const char *proto);

const char *clienthello_result_str(enum clienthello_result r);

#endif
