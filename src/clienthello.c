/* clienthello: pure parser of the raw bytes a TLS client sends first. No I/O, no allocation.
 *
 * The parse runs in two passes over the caller's buffer. The framing pass walks the TLS
 * records, checks every header and finds where the ClientHello handshake message ends; it is
 * the only pass that can answer NEED_MORE. The body pass then reads the message through a
 * cursor that steps over record headers, so a hello fragmented over many records is parsed in
 * place without being copied together first. */
#include "clienthello.h"

#include <string.h>

#define CH_RECORD_HEADER 5
#define CH_RECORD_MAX (16384 + 2048) /* TLSCiphertext bound (RFC 8446 §5.2) */
#define CH_CONTENT_HANDSHAKE 22
#define CH_HANDSHAKE_HEADER 4
#define CH_HANDSHAKE_CLIENT_HELLO 1

#define CH_EXT_SERVER_NAME 0
#define CH_EXT_ALPN 16
#define CH_EXT_SUPPORTED_VERSIONS 43
#define CH_SNI_HOST_NAME 0

/* Where the framing pass found the hello: the body pass starts reading at body_off, with
 * body_frag bytes of the message left in that record, and reads body_len bytes in all. */
struct ch_frame {
    size_t body_off;
    size_t body_frag;
    size_t body_len;
    size_t hello_len;
};

/* A bounded reader over the handshake bytes of consecutive records. pos is the buffer offset
 * of the next byte, frag the bytes left in the current record, left the bytes left in the
 * vector being read. The framing pass guarantees every record it steps into is complete. */
struct ch_cursor {
    const uint8_t *buf;
    size_t pos;
    size_t frag;
    size_t left;
};

static uint16_t ch_load_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static size_t ch_load_u24(const uint8_t *p)
{
    return (size_t)p[0] << 16 | (size_t)p[1] << 8 | p[2];
}

/* Checks the part of a record header that is present (avail bytes, possibly < 5). The first
 * record decides whether this is TLS at all; a bad header later is broken framing. */
static enum clienthello_result ch_check_header(const uint8_t *h, size_t avail, bool first)
{
    enum clienthello_result bad = first ? CLIENTHELLO_NOT_TLS : CLIENTHELLO_MALFORMED;

    if (avail >= 1 && h[0] != CH_CONTENT_HANDSHAKE)
        return bad;
    if (avail >= 2 && h[1] != 3)
        return bad;
    if (avail >= CH_RECORD_HEADER) {
        size_t rec_len = ch_load_u16(h + 3);
        if (rec_len == 0 || rec_len > CH_RECORD_MAX)
            return CLIENTHELLO_MALFORMED;
    }
    return CLIENTHELLO_OK;
}

/* Feeds the handshake header bytes found in data[0..n) into hdr (have bytes so far) and
 * judges the header as soon as the bytes for each field are in. */
static enum clienthello_result ch_take_handshake_header(uint8_t *hdr, size_t *have,
                                                        const uint8_t *data, size_t n)
{
    while (*have < CH_HANDSHAKE_HEADER && n > 0) {
        hdr[(*have)++] = *data++;
        n--;
    }
    if (*have >= 1 && hdr[0] != CH_HANDSHAKE_CLIENT_HELLO)
        return CLIENTHELLO_MALFORMED;
    if (*have == CH_HANDSHAKE_HEADER && ch_load_u24(hdr + 1) > CLIENTHELLO_MAX)
        return CLIENTHELLO_TOO_BIG;
    return CLIENTHELLO_OK;
}

/* Framing pass: walks records until the handshake message is complete. Returns OK with fr
 * filled, NEED_MORE for a valid prefix, or the verdict on the first bad header. */
static enum clienthello_result ch_frame(const uint8_t *buf, size_t len, struct ch_frame *fr)
{
    uint8_t hdr[CH_HANDSHAKE_HEADER];
    size_t hdr_have = 0;
    size_t msg_have = 0; /* message bytes (after its 4-byte header) in complete records */
    size_t off = 0;
    enum clienthello_result r;

    for (;;) {
        size_t avail = len - off;
        r = ch_check_header(buf + off, avail, off == 0);
        if (r != CLIENTHELLO_OK)
            return r;
        if (avail < CH_RECORD_HEADER)
            return CLIENTHELLO_NEED_MORE;

        size_t rec_len = ch_load_u16(buf + off + 3);
        size_t data_off = off + CH_RECORD_HEADER;
        size_t data_avail = len - data_off < rec_len ? len - data_off : rec_len;

        /* The handshake header may itself be split over records. */
        size_t hdr_before = hdr_have;
        r = ch_take_handshake_header(hdr, &hdr_have, buf + data_off, data_avail);
        if (r != CLIENTHELLO_OK)
            return r;
        if (data_avail < rec_len)
            return CLIENTHELLO_NEED_MORE;

        size_t hdr_here = hdr_have - hdr_before;
        if (hdr_before < CH_HANDSHAKE_HEADER && hdr_have == CH_HANDSHAKE_HEADER) {
            /* The body starts here, or (body_frag 0) at the next record's header. */
            fr->body_off = data_off + hdr_here;
            fr->body_frag = rec_len - hdr_here;
        }
        msg_have += rec_len - hdr_here;
        off = data_off + rec_len;

        if (hdr_have == CH_HANDSHAKE_HEADER && msg_have >= ch_load_u24(hdr + 1)) {
            fr->body_len = ch_load_u24(hdr + 1);
            fr->hello_len = off; /* trailing bytes of this record are not examined */
            return CLIENTHELLO_OK;
        }
    }
}

/* Moves the cursor over n bytes, copying them to dst unless dst is NULL. Fails when the
 * current vector holds fewer than n bytes. */
static int ch_take(struct ch_cursor *c, uint8_t *dst, size_t n)
{
    if (n > c->left)
        return -1;
    c->left -= n;
    while (n > 0) {
        if (c->frag == 0) {
            c->frag = ch_load_u16(c->buf + c->pos + 3);
            c->pos += CH_RECORD_HEADER;
        }
        size_t chunk = n < c->frag ? n : c->frag;
        if (dst) {
            memcpy(dst, c->buf + c->pos, chunk);
            dst += chunk;
        }
        c->pos += chunk;
        c->frag -= chunk;
        n -= chunk;
    }
    return 0;
}

static int ch_take_u8(struct ch_cursor *c, size_t *v)
{
    uint8_t b;
    if (ch_take(c, &b, 1) != 0)
        return -1;
    *v = b;
    return 0;
}

static int ch_take_u16(struct ch_cursor *c, size_t *v)
{
    uint8_t b[2];
    if (ch_take(c, b, 2) != 0)
        return -1;
    *v = ch_load_u16(b);
    return 0;
}

/* Opens a vector of n bytes at the cursor: sub reads it, c skips past it. */
static int ch_open(struct ch_cursor *c, size_t n, struct ch_cursor *sub)
{
    if (n > c->left)
        return -1;
    *sub = *c;
    sub->left = n;
    return ch_take(c, NULL, n);
}

/* Reads a vector whose length is a u8 (width 1) or u16 (width 2) prefix. */
static int ch_open_vec(struct ch_cursor *c, int width, struct ch_cursor *sub)
{
    size_t n;
    if ((width == 1 ? ch_take_u8(c, &n) : ch_take_u16(c, &n)) != 0)
        return -1;
    return ch_open(c, n, sub);
}

/* server_name (RFC 6066 §3): one host_name entry, 1..255 visible ASCII bytes. Other name
 * types are skipped. A second host_name, a space or a control byte is MALFORMED: the name
 * goes into policy decisions and log lines, so no ambiguity is let through. */
static int ch_parse_sni(struct ch_cursor ext, struct clienthello *out)
{
    struct ch_cursor list, name;
    size_t type;

    if (ch_open_vec(&ext, 2, &list) != 0 || ext.left != 0 || list.left == 0)
        return -1;
    while (list.left > 0) {
        if (ch_take_u8(&list, &type) != 0 || ch_open_vec(&list, 2, &name) != 0)
            return -1;
        if (type != CH_SNI_HOST_NAME)
            continue;
        if (out->has_sni || name.left == 0 || name.left >= sizeof(out->sni))
            return -1;
        size_t n = name.left;
        if (ch_take(&name, (uint8_t *)out->sni, n) != 0)
            return -1;
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)out->sni[i];
            if (ch <= 0x20 || ch >= 0x7f)
                return -1;
        }
        out->sni[n] = '\0';
        out->has_sni = true;
    }
    return 0;
}

/* application_layer_protocol_negotiation (RFC 7301 §3.1): a non-empty list of non-empty
 * names. The wire form is kept whole-entry by whole-entry while it fits in out->alpn, so the
 * kept prefix is itself a valid list. */
static int ch_parse_alpn(struct ch_cursor ext, struct clienthello *out)
{
    struct ch_cursor list;
    size_t n;

    if (ch_open_vec(&ext, 2, &list) != 0 || ext.left != 0 || list.left < 2)
        return -1;
    while (list.left > 0) {
        if (ch_take_u8(&list, &n) != 0 || n == 0 || n > list.left)
            return -1;
        if (out->alpn_len + 1 + n <= sizeof(out->alpn)) {
            out->alpn[out->alpn_len] = (uint8_t)n;
            if (ch_take(&list, out->alpn + out->alpn_len + 1, n) != 0)
                return -1;
            out->alpn_len += 1 + n;
        } else if (ch_take(&list, NULL, n) != 0) {
            return -1;
        }
    }
    return 0;
}

/* supported_versions (RFC 8446 §4.2.1): 1..127 versions; the first 16 are kept. */
static int ch_parse_versions(struct ch_cursor ext, struct clienthello *out)
{
    struct ch_cursor list;
    size_t v;

    if (ch_open_vec(&ext, 1, &list) != 0 || ext.left != 0 || list.left < 2 || list.left % 2)
        return -1;
    while (list.left > 0) {
        if (ch_take_u16(&list, &v) != 0)
            return -1;
        if (out->n_versions < sizeof(out->versions) / sizeof(out->versions[0]))
            out->versions[out->n_versions++] = (uint16_t)v;
    }
    return 0;
}

/* Walks the extensions block. Each extension this parser reads may appear once (RFC 8446
 * §4.2): a duplicate could make the gateway and the origin see different names. */
static int ch_parse_extensions(struct ch_cursor *body, struct clienthello *out)
{
    struct ch_cursor exts, ext;
    size_t type;
    bool seen_sni = false, seen_alpn = false, seen_versions = false;
    bool *seen;
    int rc;

    if (ch_open_vec(body, 2, &exts) != 0)
        return -1;
    while (exts.left > 0) {
        if (ch_take_u16(&exts, &type) != 0 || ch_open_vec(&exts, 2, &ext) != 0)
            return -1;
        if (type == CH_EXT_SERVER_NAME) {
            seen = &seen_sni;
            rc = ch_parse_sni(ext, out);
        } else if (type == CH_EXT_ALPN) {
            seen = &seen_alpn;
            rc = ch_parse_alpn(ext, out);
        } else if (type == CH_EXT_SUPPORTED_VERSIONS) {
            seen = &seen_versions;
            rc = ch_parse_versions(ext, out);
        } else {
            continue;
        }
        if (rc != 0 || *seen)
            return -1;
        *seen = true;
    }
    return 0;
}

/* Body pass (RFC 8446 §4.1.2): legacy_version, random, session id, suites, compression
 * methods, and the extensions, which TLS 1.0-1.2 clients may leave out entirely. */
static int ch_parse_body(struct ch_cursor *c, struct clienthello *out)
{
    struct ch_cursor v;
    size_t version;

    if (ch_take_u16(c, &version) != 0 || ch_take(c, NULL, 32) != 0)
        return -1;
    out->legacy_version = (uint16_t)version;
    if (ch_open_vec(c, 1, &v) != 0 || v.left > 32)
        return -1;
    if (ch_open_vec(c, 2, &v) != 0 || v.left < 2 || v.left % 2)
        return -1;
    out->n_suites = v.left / 2;
    if (ch_open_vec(c, 1, &v) != 0 || v.left < 1)
        return -1;
    if (c->left > 0 && ch_parse_extensions(c, out) != 0)
        return -1;
    return c->left == 0 ? 0 : -1;
}

enum clienthello_result clienthello_parse(const uint8_t *buf, size_t len, struct clienthello *out)
{
    struct ch_frame fr = {0};
    enum clienthello_result r = ch_frame(buf, len, &fr);

    if (r != CLIENTHELLO_OK)
        return r;
    memset(out, 0, sizeof(*out));
    out->record_version = ch_load_u16(buf + 1);
    out->hello_len = fr.hello_len;

    struct ch_cursor c = {
        .buf = buf, .pos = fr.body_off, .frag = fr.body_frag, .left = fr.body_len};
    if (ch_parse_body(&c, out) != 0)
        return CLIENTHELLO_MALFORMED;
    return CLIENTHELLO_OK;
}

bool clienthello_alpn_list_has(const uint8_t *list, size_t len, const char *proto)
{
    size_t want = strlen(proto);
    size_t i = 0;

    while (i < len) {
        size_t n = list[i];
        if (i + 1 + n > len)
            break;
        if (n == want && memcmp(list + i + 1, proto, n) == 0)
            return true;
        i += 1 + n;
    }
    return false;
}

bool clienthello_offers_alpn(const struct clienthello *hello, const char *proto)
{
    return clienthello_alpn_list_has(hello->alpn, hello->alpn_len, proto);
}

const char *clienthello_result_str(enum clienthello_result r)
{
    switch (r) {
    case CLIENTHELLO_OK:
        return "ok";
    case CLIENTHELLO_NEED_MORE:
        return "need more";
    case CLIENTHELLO_NOT_TLS:
        return "not TLS";
    case CLIENTHELLO_MALFORMED:
        return "malformed ClientHello";
    case CLIENTHELLO_TOO_BIG:
        return "ClientHello too big";
    }
    return "unknown";
}
