/* h2_buf: the HTTP/2 bridge's counted memory (every allocation of a bridge, nghttp2's too,
 * is counted and capped at its mem_limit) and the buffers built on it: the per-stream body
 * chunk lists and the header blocks as received. */
#include "h2_int.h"

#include <stdlib.h>
#include <string.h>

#define H2_CHUNK 16384       /* largest body chunk */
#define H2_FIELD_OVERHEAD 32 /* RFC 9113 §6.5.2: a field's size is name + value + 32 */

/* --- memory: every allocation of a bridge (nghttp2's too) is counted and capped --------- */

union h2_memhdr {
    size_t size;
    max_align_t align;
};

void *h2_mem_alloc(struct h2_bridge *b, size_t n)
{
    if (n > b->cfg.mem_limit || b->mem > b->cfg.mem_limit - n)
        return NULL;
    union h2_memhdr *h = malloc(sizeof(*h) + n);
    if (!h)
        return NULL;
    h->size = n;
    b->mem += n;
    if (b->mem > b->mem_peak)
        b->mem_peak = b->mem;
    return h + 1;
}

void h2_mem_free(struct h2_bridge *b, void *p)
{
    if (!p)
        return;
    union h2_memhdr *h = (union h2_memhdr *)p - 1;
    b->mem -= h->size;
    free(h);
}

void *h2_mem_realloc(struct h2_bridge *b, void *p, size_t n)
{
    if (!p)
        return h2_mem_alloc(b, n);
    if (n == 0) {
        h2_mem_free(b, p);
        return NULL;
    }
    union h2_memhdr *h = (union h2_memhdr *)p - 1;
    size_t old = h->size;
    if (n > old && (n - old > b->cfg.mem_limit || b->mem > b->cfg.mem_limit - (n - old)))
        return NULL;
    union h2_memhdr *nh = realloc(h, sizeof(*nh) + n);
    if (!nh)
        return NULL;
    nh->size = n;
    b->mem = b->mem - old + n;
    if (b->mem > b->mem_peak)
        b->mem_peak = b->mem;
    return nh + 1;
}

/* --- body buffers ------------------------------------------------------------------------ */

int h2_sbuf_add(struct h2_bridge *b, struct h2_sbuf *sb, const uint8_t *p, size_t n)
{
    while (n > 0) {
        struct h2_chunk *t = sb->tail;
        if (!t || t->len == t->cap) {
            size_t cap = n < H2_CHUNK ? (n + 4095) / 4096 * 4096 : H2_CHUNK;
            t = h2_mem_alloc(b, sizeof(*t) + cap);
            if (!t)
                return -1;
            t->next = NULL;
            t->off = t->len = 0;
            t->cap = cap;
            if (sb->tail)
                sb->tail->next = t;
            else
                sb->head = t;
            sb->tail = t;
        }
        size_t k = t->cap - t->len < n ? t->cap - t->len : n;
        memcpy(t->data + t->len, p, k);
        t->len += k;
        sb->len += k;
        p += k;
        n -= k;
    }
    return 0;
}

/* Moves up to max bytes out into dst; frees emptied chunks. */
size_t h2_sbuf_take(struct h2_bridge *b, struct h2_sbuf *sb, uint8_t *dst, size_t max)
{
    size_t got = 0;
    while (got < max && sb->head) {
        struct h2_chunk *h = sb->head;
        size_t k = h->len - h->off < max - got ? h->len - h->off : max - got;
        memcpy(dst + got, h->data + h->off, k);
        h->off += k;
        got += k;
        if (h->off == h->len) {
            sb->head = h->next;
            if (!sb->head)
                sb->tail = NULL;
            h2_mem_free(b, h);
        }
    }
    sb->len -= got;
    return got;
}

/* Frees everything; returns how many bytes were dropped. */
size_t h2_sbuf_clear(struct h2_bridge *b, struct h2_sbuf *sb)
{
    size_t n = sb->len;
    while (sb->head) {
        struct h2_chunk *next = sb->head->next;
        h2_mem_free(b, sb->head);
        sb->head = next;
    }
    sb->tail = NULL;
    sb->len = 0;
    return n;
}

/* --- header blocks ----------------------------------------------------------------------- */

void h2_head_free(struct h2_bridge *b, struct h2_head *h)
{
    h2_mem_free(b, h->bytes);
    h2_mem_free(b, h->f);
    memset(h, 0, sizeof(*h));
}

/* Appends a field; past the limits the block is marked too big and no longer grows.
 * Returns -1 on out-of-memory only. */
int h2_head_add(struct h2_bridge *b, struct h2_head *h, const uint8_t *name, size_t nlen,
                const uint8_t *value, size_t vlen, uint8_t flags)
{
    if (h->too_big)
        return 0;
    size_t add = nlen + vlen + H2_FIELD_OVERHEAD;
    if (h->n >= H2_MAX_HEADERS || add > H2_MAX_HEAD || h->size + add > H2_MAX_HEAD) {
        h->too_big = true;
        return 0;
    }
    if (h->len + nlen + vlen + 2 > h->cap) {
        size_t cap = h->cap ? h->cap : 512;
        while (cap < h->len + nlen + vlen + 2)
            cap *= 2;
        char *nb = h2_mem_realloc(b, h->bytes, cap);
        if (!nb)
            return -1;
        h->bytes = nb;
        h->cap = cap;
    }
    if (h->n == h->fcap) {
        size_t fcap = h->fcap ? h->fcap * 2 : 16;
        struct h2_field *nf = h2_mem_realloc(b, h->f, fcap * sizeof(*nf));
        if (!nf)
            return -1;
        h->f = nf;
        h->fcap = fcap;
    }
    struct h2_field *f = &h->f[h->n++];
    f->name = (uint32_t)h->len;
    f->name_len = (uint32_t)nlen;
    memcpy(h->bytes + h->len, name, nlen);
    h->len += nlen;
    h->bytes[h->len++] = '\0';
    f->value = (uint32_t)h->len;
    f->value_len = (uint32_t)vlen;
    memcpy(h->bytes + h->len, value, vlen);
    h->len += vlen;
    h->bytes[h->len++] = '\0';
    f->flags = flags & NGHTTP2_NV_FLAG_NO_INDEX;
    h->size += add;
    return 0;
}

static const char *field_name(const struct h2_head *h, size_t i)
{
    return h->bytes + h->f[i].name;
}

static const char *field_value(const struct h2_head *h, size_t i)
{
    return h->bytes + h->f[i].value;
}

/* The value of the first field named name (lower-case), or NULL. */
const char *h2_head_get(const struct h2_head *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(field_name(h, i), name) == 0)
            return field_value(h, i);
    return NULL;
}

/* An nghttp2_nv array over the block, to submit as received (nghttp2 copies it). Caller
 * frees it with h2_mem_free. NULL on out-of-memory. */
nghttp2_nv *h2_head_nva(struct h2_bridge *b, const struct h2_head *h)
{
    nghttp2_nv *nva = h2_mem_alloc(b, (h->n ? h->n : 1) * sizeof(*nva));
    if (!nva)
        return NULL;
    for (size_t i = 0; i < h->n; i++) {
        nva[i].name = (uint8_t *)(h->bytes + h->f[i].name);
        nva[i].namelen = h->f[i].name_len;
        nva[i].value = (uint8_t *)(h->bytes + h->f[i].value);
        nva[i].valuelen = h->f[i].value_len;
        nva[i].flags = h->f[i].flags;
    }
    return nva;
}

/* The regular (non-pseudo) fields for a hook; caller frees with h2_mem_free. NULL on OOM. */
struct h2_header *h2_head_regular(struct h2_bridge *b, const struct h2_head *h, size_t *n)
{
    struct h2_header *v = h2_mem_alloc(b, (h->n ? h->n : 1) * sizeof(*v));
    if (!v)
        return NULL;
    *n = 0;
    for (size_t i = 0; i < h->n; i++) {
        if (field_name(h, i)[0] == ':')
            continue;
        v[*n].name = field_name(h, i);
        v[*n].name_len = h->f[i].name_len;
        v[*n].value = field_value(h, i);
        v[*n].value_len = h->f[i].value_len;
        (*n)++;
    }
    return v;
}
