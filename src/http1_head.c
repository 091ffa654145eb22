/* http1_head: message heads for the HTTP/1.1 inspector. http-parser tokenises each head; a
 * strict rescan of the complete head adds the checks http-parser leaves out (line endings,
 * header syntax, the framing headers, the request target and Host, the status line), so that
 * nothing ambiguous is ever forwarded. */
#include "http1_int.h"

#include <string.h>
#include <strings.h>

#define H1_CL_MAX UINT64_C(1000000000000000000) /* Content-Length above 10^18 is refused */
#define H1_AUTHORITY_MAX 262                    /* 255-byte name, ':', 5-digit port, brackets */

/* ---- character classes ------------------------------------------------------------------- */

/* tchar; VCHAR or obs-text; SP/HTAB; reg-name (unreserved, pct, sub-delims); hex digit. */
/* clang-format off */
const uint8_t h1_cls[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  4,  0,  0,  0,  0,  0,  0,
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
    4,  11, 2,  3,  11, 11, 11, 11, 10, 10, 11, 11, 10, 11, 11, 2,
    27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 2,  10, 2,  10, 2,  2,
    2,  27, 27, 27, 27, 27, 27, 11, 11, 11, 11, 11, 11, 11, 11, 11,
    11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 2,  2,  2,  3,  11,
    3,  27, 27, 27, 27, 27, 27, 11, 11, 11, 11, 11, 11, 11, 11, 11,
    11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 2,  3,  2,  11, 0,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
};
/* clang-format on */

static bool span_eq_ci(const char *a, size_t an, const char *b, size_t bn)
{
    return an == bn && strncasecmp(a, b, an) == 0;
}

#define SPAN_IS(p, n, lit) span_eq_ci(p, n, lit, sizeof(lit) - 1)

/* ---- heads ------------------------------------------------------------------------------- */

static int on_headers_complete(http_parser *p)
{
    http_parser_pause(p, 1); /* stop on the final LF: bodies are framed here */
    return 0;
}

static const http_parser_settings h1_settings = {.on_headers_complete = on_headers_complete};

static const char *parser_error(enum http_errno e, int *status)
{
    switch (e) {
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        return "Content-Length with Transfer-Encoding, or repeated Content-Length";
    case HPE_INVALID_CONTENT_LENGTH:
        return "invalid Content-Length";
    case HPE_LF_EXPECTED:
        return "bare CR in head";
    case HPE_INVALID_HEADER_TOKEN:
        return "invalid character in a header";
    case HPE_INVALID_METHOD:
        return "unknown request method";
    case HPE_INVALID_VERSION:
        return "invalid HTTP version";
    case HPE_INVALID_STATUS:
        return "invalid status code";
    case HPE_HEADER_OVERFLOW:
        *status = 431;
        return "head too large";
    default:
        return http_errno_description(e);
    }
}

/* Runs side s's head parser over the rest of f. HEAD_DONE: *hd is the complete head (through
 * its final LF), f->pos is past it. HEAD_MORE: the rest of f was copied into the hold.
 * HEAD_ERROR: *why and *status (400 or 431) say why. */
int h1_head_step(struct h1_side *s, struct h1_feed *f, struct h1_head *hd, const char **why,
                 int *status)
{
    const uint8_t *p = f->buf + f->pos;
    size_t avail = f->len - f->pos;
    size_t n = http_parser_execute(&s->hp, &h1_settings, (const char *)p, avail);
    enum http_errno e = HTTP_PARSER_ERRNO(&s->hp);
    if (e != HPE_OK && e != HPE_PAUSED) {
        *why = parser_error(e, status);
        return HEAD_ERROR;
    }
    size_t used = e == HPE_PAUSED ? n + 1 : avail; /* paused on the final LF: count it */
    if (s->hold.len + used > HTTP1_MAX_HEAD) {
        *status = 431;
        *why = "head too large";
        return HEAD_ERROR;
    }
    if (e == HPE_OK || s->hold.len) {
        if (h1_buf_append(&s->hold, p, used) != 0) {
            *status = 503;
            *why = "out of memory";
            return HEAD_ERROR;
        }
    }
    f->pos += used;
    if (e == HPE_OK)
        return HEAD_MORE;
    if (s->hold.len)
        *hd = (struct h1_head){(const char *)s->hold.p, s->hold.len, true};
    else
        *hd = (struct h1_head){(const char *)p, used, false};
    return HEAD_DONE;
}

static const char *te_list(const struct http1_header *hd, struct h1_scan *sc)
{
    const char *v = hd->value, *end = v + hd->value_len;
    sc->te = true;
    while (v < end) {
        const char *comma = memchr(v, ',', (size_t)(end - v));
        const char *e = comma ? comma : end;
        while (v < e && is_cls(*v, C_WS))
            v++;
        const char *te = e;
        while (te > v && is_cls(te[-1], C_WS))
            te--;
        if (te > v) {
            for (const char *c = v; c < te; c++)
                if (!is_cls(*c, C_TCHAR))
                    return "invalid Transfer-Encoding";
            sc->te_last_chunked = SPAN_IS(v, (size_t)(te - v), "chunked");
            sc->te_n_chunked += sc->te_last_chunked;
        }
        v = comma ? comma + 1 : end;
    }
    return NULL;
}

static const char *content_length(const struct http1_header *hd, struct h1_scan *sc)
{
    if (sc->n_cl++)
        return "repeated Content-Length";
    if (hd->value_len == 0)
        return "invalid Content-Length";
    uint64_t v = 0;
    for (size_t i = 0; i < hd->value_len; i++) {
        char c = hd->value[i];
        if (c < '0' || c > '9')
            return "invalid Content-Length";
        if (v >= H1_CL_MAX / 10)
            return "Content-Length too large";
        v = v * 10 + (uint64_t)(c - '0');
    }
    sc->cl = v;
    return NULL;
}

/* The meaning of the few headers that frame or name a message. */
static const char *header_semantics(const struct http1_header *hd, struct h1_scan *sc)
{
    const char *n = hd->name;
    size_t nl = hd->name_len;
    if (SPAN_IS(n, nl, "host")) {
        if (sc->n_host++ == 0) {
            sc->host = hd->value;
            sc->host_len = hd->value_len;
        }
    } else if (SPAN_IS(n, nl, "content-length")) {
        return content_length(hd, sc);
    } else if (SPAN_IS(n, nl, "transfer-encoding")) {
        return te_list(hd, sc);
    } else if (SPAN_IS(n, nl, "content-type")) {
        if (sc->n_ctype++ == 0) {
            sc->ctype = hd->value;
            sc->ctype_len = hd->value_len;
        } else if (!span_eq_ci(sc->ctype, sc->ctype_len, hd->value, hd->value_len)) {
            sc->ctype_conflict = true;
        }
    } else if (SPAN_IS(n, nl, "upgrade") && !sc->upgrade) {
        sc->upgrade = hd->value;
        sc->upgrade_len = hd->value_len;
    } else if (SPAN_IS(n, nl, "expect")) {
        sc->expect_continue = SPAN_IS(hd->value, hd->value_len, "100-continue");
    }
    return NULL;
}

static const char *header_line(const char *line, size_t ll, struct h1_scan *sc)
{
    if (is_cls(line[0], C_WS))
        return "obsolete line folding in a header";
    size_t c = 0;
    while (c < ll && is_cls(line[c], C_TCHAR))
        c++;
    if (c == 0 || c == ll || line[c] != ':')
        return "invalid header name";
    size_t v = c + 1, ve = ll;
    while (v < ve && is_cls(line[v], C_WS))
        v++;
    while (ve > v && is_cls(line[ve - 1], C_WS))
        ve--;
    for (size_t k = v; k < ve; k++)
        if (!is_cls(line[k], C_VCHAR | C_WS))
            return "invalid character in a header value";
    if (sc->n == HTTP1_MAX_HEADERS) {
        sc->status = 431;
        return "too many header lines";
    }
    struct http1_header *hd = &sc->hdr[sc->n++];
    *hd = (struct http1_header){line, line + v, c, ve - v};
    return header_semantics(hd, sc);
}

/* Rescans a complete head that http-parser accepted: lines end in CRLF (no bare CR or LF), no
 * obs-fold, header names are tokens, values are visible characters; collects the headers. */
const char *h1_head_scan(const char *p, size_t n, struct h1_scan *sc)
{
    size_t i = 0;
    while (n - i >= 2 && p[i] == '\r' && p[i + 1] == '\n')
        i += 2; /* empty lines before a message are allowed (RFC 9112 2.2) */
    bool first = true;
    while (i < n) {
        const char *lf = memchr(p + i, '\n', n - i);
        if (!lf)
            break;
        size_t e = (size_t)(lf - p);
        if (e == i || p[e - 1] != '\r')
            return "bare LF in head";
        const char *line = p + i;
        size_t ll = e - 1 - i;
        i = e + 1;
        if (first) {
            if (memchr(line, '\r', ll)) /* header lines: their byte checks refuse CR */
                return "bare CR in head";
            sc->line = line;
            sc->line_len = ll;
            first = false;
        } else if (ll == 0) {
            return i == n ? NULL : "bytes after the end of the head";
        } else {
            const char *why = header_line(line, ll, sc);
            if (why)
                return why;
        }
    }
    return "head without an empty line";
}

/* Body framing shared by both directions (RFC 9112 6): a Transfer-Encoding must end in a single
 * chunked and come alone, in HTTP/1.1; the result must agree with what http-parser saw. */
static const char *framing_check(const struct h1_side *s, const struct h1_scan *sc)
{
    bool chunked = sc->te && sc->te_last_chunked && sc->te_n_chunked == 1;
    if (sc->te && sc->n_cl)
        return "Content-Length with Transfer-Encoding";
    if (sc->te && s->hp.http_minor == 0)
        return "Transfer-Encoding in an HTTP/1.0 message";
    if (sc->te && !chunked)
        return "Transfer-Encoding other than a final chunked";
    if (chunked != !!(s->hp.flags & F_CHUNKED))
        return "ambiguous Transfer-Encoding";
    if (sc->n_cl && (!(s->hp.flags & F_CONTENTLENGTH) || s->hp.content_length != sc->cl))
        return "ambiguous Content-Length";
    return NULL;
}

/* ---- requests ---------------------------------------------------------------------------- */

static bool authority_valid(const char *a, size_t n)
{
    size_t i = 0;
    if (n == 0 || n > H1_AUTHORITY_MAX)
        return false;
    if (a[0] == '[') {
        const char *rb = memchr(a, ']', n);
        if (!rb || rb == a + 1)
            return false;
        for (const char *c = a + 1; c < rb; c++)
            if (!is_cls(*c, C_HEX) && *c != ':' && *c != '.')
                return false;
        i = (size_t)(rb - a) + 1;
    } else {
        while (i < n && a[i] != ':' && is_cls(a[i], C_REGNAME))
            i++;
        if (i == 0)
            return false;
    }
    if (i == n)
        return true;
    if (a[i] != ':' || n - i < 2 || n - i > 6)
        return false;
    for (i++; i < n; i++)
        if (a[i] < '0' || a[i] > '9')
            return false;
    return true;
}

/* Same authority, ignoring case and an explicit default port. */
static bool authority_same(const char *a, size_t an, const char *b, size_t bn)
{
    if (an > 4 && memcmp(a + an - 4, ":443", 4) == 0)
        an -= 4;
    if (bn > 4 && memcmp(b + bn - 4, ":443", 4) == 0)
        bn -= 4;
    return span_eq_ci(a, an, b, bn);
}

/* Splits an absolute-form target (https://host[:port]/path?query) into authority and path. */
static const char *target_absolute(const char *t, size_t tl, struct h1_target *tg)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(t, tl, 0, &u) != 0 || !(u.field_set & (1 << UF_SCHEMA)) ||
        !(u.field_set & (1 << UF_HOST)))
        return "invalid request target";
    const char *scheme = t + u.field_data[UF_SCHEMA].off;
    size_t sl = u.field_data[UF_SCHEMA].len;
    if (!SPAN_IS(scheme, sl, "https") && !SPAN_IS(scheme, sl, "http"))
        return "request target with a scheme other than https";
    if (u.field_set & (1 << UF_USERINFO))
        return "user information in the request target";
    tg->auth = t + sl + 3; /* after "://" */
    if (u.field_set & (1 << UF_PATH)) {
        tg->path = t + u.field_data[UF_PATH].off;
    } else if (u.field_set & (1 << UF_QUERY)) {
        tg->path = t + u.field_data[UF_QUERY].off - 1; /* "?query" */
        tg->slash = true;
    } else {
        tg->path = "/";
        tg->plen = 1;
        tg->alen = (size_t)(t + tl - tg->auth);
        return NULL;
    }
    tg->alen = (size_t)(tg->path - tg->auth);
    tg->plen = (size_t)(t + tl - tg->path);
    return NULL;
}

/* Checks the request line and target against http-parser's reading; finds authority and path. */
static const char *request_target(const struct h1_side *s, const struct h1_scan *sc,
                                  struct h1_target *tg, int *status)
{
    const char *m = http_method_str((enum http_method)s->hp.method);
    size_t ml = strlen(m), n = sc->line_len;
    const char *l = sc->line;
    if (s->hp.http_major != 1 || s->hp.http_minor > 1) {
        *status = 505;
        return "unsupported HTTP version";
    }
    if (n < ml + 11 || memcmp(l, m, ml) != 0 || l[ml] != ' ' ||
        memcmp(l + n - 9, " HTTP/1.", 8) != 0 || l[n - 1] != '0' + s->hp.http_minor)
        return "malformed request line";
    const char *t = l + ml + 1;
    size_t tl = n - ml - 10;
    if (memchr(t, ' ', tl))
        return "malformed request line";
    if (memchr(t, '#', tl))
        return "fragment in the request target";
    *tg = (struct h1_target){0};
    if (s->hp.method == HTTP_CONNECT) {
        struct http_parser_url u;
        http_parser_url_init(&u);
        if (!authority_valid(t, tl) || http_parser_parse_url(t, tl, 1, &u) != 0 ||
            !(u.field_set & (1 << UF_PORT)))
            return "CONNECT target is not host:port";
        tg->auth = t;
        tg->alen = tl;
        tg->path = "";
    } else if (t[0] == '/') {
        tg->path = t;
        tg->plen = tl;
    } else if (tl == 1 && t[0] == '*') {
        if (s->hp.method != HTTP_OPTIONS)
            return "asterisk target outside OPTIONS";
        tg->path = t;
        tg->plen = 1;
    } else {
        const char *why = target_absolute(t, tl, tg);
        if (why)
            return why;
        if (!authority_valid(tg->auth, tg->alen))
            return "invalid authority in the request target";
    }
    return NULL;
}

/* Host rules (RFC 9112 3.2): exactly one in HTTP/1.1, valid, and naming the same authority as
 * an absolute-form or CONNECT target, so that policy and server see the same host. */
static const char *request_host(const struct h1_side *s, const struct h1_scan *sc,
                                struct h1_target *tg)
{
    if (sc->n_host > 1)
        return "more than one Host header";
    if (sc->n_host == 0) {
        if (s->hp.http_minor == 1)
            return "missing Host header";
        if (!tg->auth)
            tg->auth = "";
        return NULL;
    }
    if (!authority_valid(sc->host, sc->host_len))
        return "invalid Host header";
    if (tg->auth && !authority_same(tg->auth, tg->alen, sc->host, sc->host_len))
        return "Host header does not match the request target";
    if (!tg->auth) {
        tg->auth = sc->host;
        tg->alen = sc->host_len;
    }
    return NULL;
}

const char *h1_request_check(const struct h1_side *s, const struct h1_scan *sc,
                             struct h1_target *tg, int *status)
{
    const char *why = request_target(s, sc, tg, status);
    if (!why)
        why = request_host(s, sc, tg);
    if (!why)
        why = framing_check(s, sc);
    if (!why && s->hp.method == HTTP_CONNECT && (sc->te || sc->cl > 0))
        why = "CONNECT with a body";
    return why;
}

/* ---- responses --------------------------------------------------------------------------- */

/* Checks the status line against http-parser's reading: "HTTP/1.x DDD[ reason]". */
static const char *status_line_check(const struct h1_side *s, const struct h1_scan *sc)
{
    const char *l = sc->line;
    size_t n = sc->line_len;
    if (s->hp.http_major != 1 || s->hp.http_minor > 1)
        return "unsupported HTTP version in the response";
    if (n < 12 || memcmp(l, "HTTP/1.", 7) != 0 || l[8] != ' ' || (n > 12 && l[12] != ' '))
        return "malformed status line";
    unsigned st = 0;
    for (int i = 9; i < 12; i++) {
        if (l[i] < '0' || l[i] > '9')
            return "malformed status line";
        st = st * 10 + (unsigned)(l[i] - '0');
    }
    if (st < 100 || st > 599 || st != s->hp.status_code)
        return "invalid status code";
    for (size_t i = 13; i < n; i++)
        if (!is_cls(l[i], C_VCHAR | C_WS))
            return "invalid character in the reason phrase";
    return NULL;
}

/* Validates a complete response head; returns why it is refused, or NULL. */
const char *h1_response_check(const struct h1_rec *r, const struct h1_side *s,
                              const struct h1_scan *sc)
{
    unsigned st = s->hp.status_code;
    const char *why = status_line_check(s, sc);
    if (!why)
        why = framing_check(s, sc);
    if (why || (st < 200 && st != 101))
        return why;
    if (st == 101 && (!(r->flags & R_UPGRADE) || r->method == HTTP_CONNECT))
        return "101 Switching Protocols without an Upgrade request";
    if (st == 101 && !(r->flags & R_REQ_DONE))
        return "101 Switching Protocols before the request was complete";
    if (sc->ctype_conflict)
        return "conflicting Content-Type headers";
    return NULL;
}
