/* libFuzzer driver for clienthello_parse.
 *
 * Each input is used twice. As raw bytes from a client: the parse must stay in bounds, agree
 * with itself on prefixes, and fill only sane fields. As a handshake message: data[0] picks a
 * fragment size, the rest is framed into records of that size and must parse exactly as the
 * same message framed in one record, which exercises reassembly on every body the fuzzer
 * finds. Violations abort so libFuzzer records them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clienthello.h"

#define FUZZ_RECORD_MAX (16384 + 2048)

static void fuzz_check(int ok)
{
    if (!ok)
        abort();
}

static void fuzz_check_fields(const struct clienthello *ch, size_t size)
{
    fuzz_check(ch->hello_len <= size);
    fuzz_check(ch->alpn_len <= sizeof(ch->alpn));
    fuzz_check(ch->n_versions <= sizeof(ch->versions) / sizeof(ch->versions[0]));
    size_t sni_len = strnlen(ch->sni, sizeof(ch->sni));
    fuzz_check(sni_len < sizeof(ch->sni));
    fuzz_check(ch->has_sni == (sni_len > 0));
    for (size_t i = 0; i < ch->alpn_len; i += 1 + ch->alpn[i])
        fuzz_check(ch->alpn[i] > 0 && i + 1 + ch->alpn[i] <= ch->alpn_len);
    clienthello_offers_alpn(ch, "h2");
}

/* A final verdict on a prefix must be the verdict on the whole input. */
static void fuzz_raw(const uint8_t *data, size_t size)
{
    struct clienthello ch, part;
    enum clienthello_result r = clienthello_parse(data, size, &ch);

    fuzz_check(clienthello_result_str(r) != NULL);
    if (r == CLIENTHELLO_OK) {
        fuzz_check_fields(&ch, size);
        fuzz_check(clienthello_parse(data, ch.hello_len, &part) == CLIENTHELLO_OK);
        fuzz_check(part.hello_len == ch.hello_len);
        fuzz_check(clienthello_parse(data, ch.hello_len - 1, &part) == CLIENTHELLO_NEED_MORE);
    }
    enum clienthello_result half = clienthello_parse(data, size / 2, &part);
    fuzz_check(half == CLIENTHELLO_NEED_MORE || half == r);
}

static size_t fuzz_frame(uint8_t *out, const uint8_t *msg, size_t len, size_t frag)
{
    size_t n = 0;
    for (size_t off = 0; off < len; off += frag) {
        size_t chunk = len - off < frag ? len - off : frag;
        out[n++] = 0x16;
        out[n++] = 0x03;
        out[n++] = 0x01;
        out[n++] = (uint8_t)(chunk >> 8);
        out[n++] = (uint8_t)chunk;
        memcpy(out + n, msg + off, chunk);
        n += chunk;
    }
    return n;
}

static void fuzz_reframed(const uint8_t *data, size_t size)
{
    if (size < 2 || size - 1 > FUZZ_RECORD_MAX)
        return;
    const uint8_t *msg = data + 1;
    size_t len = size - 1, frag = (size_t)data[0] + 1;
    uint8_t *one = malloc(len + 5);
    uint8_t *many = malloc(len + 5 * (len / frag + 1));
    fuzz_check(one && many);

    size_t one_len = fuzz_frame(one, msg, len, len);
    size_t many_len = fuzz_frame(many, msg, len, frag);
    struct clienthello a, b;
    enum clienthello_result ra = clienthello_parse(one, one_len, &a);
    enum clienthello_result rb = clienthello_parse(many, many_len, &b);
    fuzz_check(ra == rb);
    if (ra == CLIENTHELLO_OK) {
        fuzz_check_fields(&b, many_len);
        a.hello_len = b.hello_len = 0;
        fuzz_check(memcmp(&a, &b, sizeof(a)) == 0);
    }
    free(one);
    free(many);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_raw(data, size);
    fuzz_reframed(data, size);
    return 0;
}
