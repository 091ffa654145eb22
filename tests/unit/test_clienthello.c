/* Unit tests for src/clienthello.c: real hellos captured from openssl s_client, the same
 * hellos re-framed every way a client may send them, and hand-built broken ones. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "clienthello.h"

#define BUF_MAX (CLIENTHELLO_MAX + 4096)

/* A byte string built by the helpers below; large enough for the biggest hello plus the
 * record headers of a 1-byte-per-record framing of a modest one. */
struct bytes {
    uint8_t b[4 * BUF_MAX];
    size_t len;
};

static struct bytes *bytes_new(void)
{
    struct bytes *x = calloc(1, sizeof(*x));
    assert_non_null(x);
    return x;
}

static void put(struct bytes *x, const void *p, size_t n)
{
    assert_true(x->len + n <= sizeof(x->b));
    memcpy(x->b + x->len, p, n);
    x->len += n;
}

static void put_u8(struct bytes *x, unsigned v)
{
    uint8_t b = (uint8_t)v;
    put(x, &b, 1);
}

static void put_u16(struct bytes *x, unsigned v)
{
    put_u8(x, v >> 8);
    put_u8(x, v);
}

static void put_u24(struct bytes *x, size_t v)
{
    put_u8(x, (unsigned)(v >> 16));
    put_u16(x, (unsigned)(v & 0xffff));
}

/* Reads tests/unit/data/name into a new buffer. */
static struct bytes *load_data(const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", TEST_DATA_DIR, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    struct bytes *x = bytes_new();
    x->len = fread(x->b, 1, sizeof(x->b), f);
    fclose(f);
    assert_true(x->len > 0);
    return x;
}

/* The handshake message carried by the single record of a captured hello. */
static struct bytes *message_of(const struct bytes *records)
{
    struct bytes *m = bytes_new();
    size_t off = 0;
    while (off + 5 <= records->len) {
        size_t n = (size_t)records->b[off + 3] << 8 | records->b[off + 4];
        put(m, records->b + off + 5, n);
        off += 5 + n;
    }
    assert_int_equal(off, records->len);
    return m;
}

/* Frames msg into handshake records of at most frag bytes each. */
static struct bytes *frame(const struct bytes *msg, size_t frag)
{
    struct bytes *x = bytes_new();
    for (size_t off = 0; off < msg->len; off += frag) {
        size_t n = msg->len - off < frag ? msg->len - off : frag;
        put(x, "\x16\x03\x01", 3);
        put_u16(x, (unsigned)n);
        put(x, msg->b + off, n);
    }
    return x;
}

/* Frames msg into two records split after `at` message bytes. */
static struct bytes *frame_split(const struct bytes *msg, size_t at)
{
    struct bytes *x = bytes_new();
    put(x, "\x16\x03\x01", 3);
    put_u16(x, (unsigned)at);
    put(x, msg->b, at);
    put(x, "\x16\x03\x03", 3);
    put_u16(x, (unsigned)(msg->len - at));
    put(x, msg->b + at, msg->len - at);
    return x;
}

/* A ClientHello message with the given extensions block bytes (exts NULL: no block). */
static struct bytes *build_hello(const struct bytes *exts)
{
    struct bytes *body = bytes_new();
    uint8_t random[32] = {0};
    put_u16(body, 0x0303);
    put(body, random, sizeof(random));
    put_u8(body, 0);  /* session id */
    put_u16(body, 4); /* two suites */
    put_u16(body, 0x1301);
    put_u16(body, 0x1302);
    put_u8(body, 1); /* one compression method */
    put_u8(body, 0);
    if (exts) {
        put_u16(body, (unsigned)exts->len);
        put(body, exts->b, exts->len);
    }
    struct bytes *msg = bytes_new();
    put_u8(msg, 1);
    put_u24(msg, body->len);
    put(msg, body->b, body->len);
    free(body);
    return msg;
}

static void put_ext(struct bytes *exts, unsigned type, const void *data, size_t n)
{
    put_u16(exts, type);
    put_u16(exts, (unsigned)n);
    put(exts, data, n);
}

static void put_ext_sni(struct bytes *exts, const char *name, size_t n)
{
    put_u16(exts, 0);
    put_u16(exts, (unsigned)(n + 5));
    put_u16(exts, (unsigned)(n + 3));
    put_u8(exts, 0);
    put_u16(exts, (unsigned)n);
    put(exts, name, n);
}

/* A padding extension (RFC 7685) that brings the message to exactly total bytes. */
static struct bytes *build_padded_hello(size_t total)
{
    struct bytes *exts = bytes_new();
    put_ext_sni(exts, "pq.example", 10);
    put_ext(exts, 16, "\x00\x03\x02h2", 5);
    struct bytes *probe = build_hello(exts);
    size_t pad = total - probe->len - 4;
    free(probe);
    put_u16(exts, 21);
    put_u16(exts, (unsigned)pad);
    for (size_t i = 0; i < pad; i++)
        put_u8(exts, 0);
    struct bytes *msg = build_hello(exts);
    free(exts);
    assert_int_equal(msg->len, total);
    return msg;
}

static enum clienthello_result parse(const struct bytes *x, struct clienthello *out)
{
    return clienthello_parse(x->b, x->len, out);
}

/* Parses the hello built from the given extensions, framed in one record. */
static enum clienthello_result parse_exts(const struct bytes *exts, struct clienthello *out)
{
    struct bytes *msg = build_hello(exts);
    struct bytes *rec = frame(msg, 16384);
    enum clienthello_result r = parse(rec, out);
    free(msg);
    free(rec);
    return r;
}

static void assert_basic_fields(const struct clienthello *ch)
{
    assert_true(ch->has_sni);
    assert_string_equal(ch->sni, "example.com");
    assert_int_equal(ch->n_suites, 31);
    assert_int_equal(ch->legacy_version, 0x0303);
    assert_int_equal(ch->n_versions, 4);
    assert_int_equal(ch->versions[0], 0x0304);
    assert_int_equal(ch->versions[3], 0x0301);
    assert_int_equal(ch->alpn_len, 12);
    assert_memory_equal(ch->alpn, "\x02h2\x08http/1.1", 12);
}

static void test_real_hello_whole(void **state)
{
    struct bytes *x = load_data("clienthello_openssl_sni_alpn.bin");
    struct clienthello ch;
    assert_int_equal(parse(x, &ch), CLIENTHELLO_OK);
    assert_basic_fields(&ch);
    assert_int_equal(ch.record_version, 0x0301);
    assert_int_equal(ch.hello_len, x->len);
    assert_true(clienthello_offers_alpn(&ch, "h2"));
    assert_true(clienthello_offers_alpn(&ch, "http/1.1"));
    assert_false(clienthello_offers_alpn(&ch, "h3"));
    assert_false(clienthello_offers_alpn(&ch, "h"));
    assert_false(clienthello_offers_alpn(&ch, "http/1.10"));
    free(x);
}

/* Bytes after the hello (early data, a pipelined request) are not part of it. */
static void test_real_hello_with_trailing_bytes(void **state)
{
    struct bytes *x = load_data("clienthello_openssl_sni_alpn.bin");
    size_t hello = x->len;
    put(x, "\x17\x03\x03\x00\x05hello", 10);
    struct clienthello ch;
    assert_int_equal(parse(x, &ch), CLIENTHELLO_OK);
    assert_int_equal(ch.hello_len, hello);
    free(x);
}

static void test_real_hello_tls12_no_sni(void **state)
{
    struct bytes *x = load_data("clienthello_openssl_tls12_nosni.bin");
    struct clienthello ch;
    assert_int_equal(parse(x, &ch), CLIENTHELLO_OK);
    assert_false(ch.has_sni);
    assert_string_equal(ch.sni, "");
    assert_int_equal(ch.alpn_len, 0);
    assert_false(clienthello_offers_alpn(&ch, "h2"));
    assert_int_equal(ch.n_versions, 0);
    assert_int_equal(ch.n_suites, 28);
    assert_int_equal(ch.hello_len, x->len);
    free(x);
}

static void test_real_hello_ffdhe8192(void **state)
{
    struct bytes *x = load_data("clienthello_openssl_ffdhe8192.bin");
    struct clienthello ch;
    assert_int_equal(parse(x, &ch), CLIENTHELLO_OK);
    assert_string_equal(ch.sni, "big.example.net");
    assert_true(clienthello_offers_alpn(&ch, "spdy/3.1"));
    assert_int_equal(ch.hello_len, x->len);
    free(x);
}

/* A reader sees the hello arrive in arbitrary pieces: every proper prefix must ask for more. */
static void assert_prefixes_need_more(const struct bytes *x, size_t step)
{
    struct clienthello ch;
    for (size_t n = 0; n < x->len; n += step)
        if (clienthello_parse(x->b, n, &ch) != CLIENTHELLO_NEED_MORE)
            fail_msg("prefix of %zu/%zu bytes: %s", n, x->len,
                     clienthello_result_str(clienthello_parse(x->b, n, &ch)));
    assert_int_equal(clienthello_parse(x->b, x->len, &ch), CLIENTHELLO_OK);
}

static void test_real_hello_byte_by_byte(void **state)
{
    struct bytes *x = load_data("clienthello_openssl_sni_alpn.bin");
    assert_prefixes_need_more(x, 1);
    free(x);
}

static void test_real_hello_split_at_every_offset(void **state)
{
    struct bytes *x = load_data("clienthello_openssl_sni_alpn.bin");
    struct bytes *msg = message_of(x);
    for (size_t at = 1; at < msg->len; at++) {
        struct bytes *two = frame_split(msg, at);
        struct clienthello ch;
        if (parse(two, &ch) != CLIENTHELLO_OK)
            fail_msg("split at %zu: %s", at, clienthello_result_str(parse(two, &ch)));
        assert_basic_fields(&ch);
        assert_int_equal(ch.hello_len, msg->len + 10);
        assert_int_equal(ch.record_version, 0x0301);
        if (at % 37 == 1)
            assert_prefixes_need_more(two, 1);
        free(two);
    }
    free(msg);
    free(x);
}

static void test_real_hello_one_byte_records(void **state)
{
    struct bytes *x = load_data("clienthello_openssl_ffdhe8192.bin");
    struct bytes *msg = message_of(x);
    struct bytes *tiny = frame(msg, 1);
    struct clienthello ch;
    assert_int_equal(parse(tiny, &ch), CLIENTHELLO_OK);
    assert_string_equal(ch.sni, "big.example.net");
    assert_int_equal(ch.hello_len, 6 * msg->len);
    assert_prefixes_need_more(tiny, 13);
    free(tiny);
    free(msg);
    free(x);
}

static void test_exactly_16k_one_record(void **state)
{
    struct bytes *msg = build_padded_hello(16384);
    struct bytes *x = frame(msg, 16384);
    struct clienthello ch;
    assert_int_equal(x->len, 16384 + 5);
    assert_int_equal(parse(x, &ch), CLIENTHELLO_OK);
    assert_string_equal(ch.sni, "pq.example");
    assert_true(clienthello_offers_alpn(&ch, "h2"));
    assert_int_equal(ch.hello_len, x->len);
    free(x);
    free(msg);
}

/* A record may carry up to 2^14 + 2048 bytes; one byte more is broken framing. */
static void test_record_length_limit(void **state)
{
    struct clienthello ch;
    struct bytes *msg = build_padded_hello(16384 + 2048);
    struct bytes *x = frame(msg, 16384 + 2048);
    assert_int_equal(parse(x, &ch), CLIENTHELLO_OK);
    free(x);
    free(msg);

    msg = build_padded_hello(16384 + 2049);
    x = frame(msg, 16384 + 2049);
    assert_int_equal(parse(x, &ch), CLIENTHELLO_MALFORMED);
    free(x);
    free(msg);
}

/* Post-quantum hellos exceed one record; the reader must reassemble them. */
static void test_big_hello_over_two_records(void **state)
{
    struct bytes *msg = build_padded_hello(20000);
    struct bytes *x = frame(msg, 16384);
    struct clienthello ch;
    assert_int_equal(parse(x, &ch), CLIENTHELLO_OK);
    assert_string_equal(ch.sni, "pq.example");
    assert_int_equal(ch.hello_len, 20000 + 10);
    assert_prefixes_need_more(x, 7);
    free(x);
    free(msg);

    x = load_data("clienthello_padded_20k_2records.bin");
    assert_int_equal(parse(x, &ch), CLIENTHELLO_OK);
    assert_string_equal(ch.sni, "big.example.net");
    assert_true(clienthello_offers_alpn(&ch, "http/1.1"));
    assert_int_equal(ch.hello_len, x->len);
    free(x);
}

static void test_largest_and_too_big(void **state)
{
    struct clienthello ch;
    struct bytes *msg = build_padded_hello(CLIENTHELLO_MAX + 4);
    struct bytes *x = frame(msg, 16384);
    assert_int_equal(parse(x, &ch), CLIENTHELLO_OK);
    assert_int_equal(ch.hello_len, x->len);
    free(x);
    free(msg);

    /* Judged on the handshake header alone, before the body arrives. */
    const uint8_t big[] = {0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x01, 0x00, 0x01};
    assert_int_equal(clienthello_parse(big, sizeof(big), &ch), CLIENTHELLO_TOO_BIG);
    const uint8_t ok[] = {0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x01, 0x00, 0x00};
    assert_int_equal(clienthello_parse(ok, sizeof(ok), &ch), CLIENTHELLO_NEED_MORE);
}

static void test_need_more_header_prefixes(void **state)
{
    struct clienthello ch;
    const uint8_t hdr[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};
    for (size_t n = 0; n <= sizeof(hdr); n++)
        assert_int_equal(clienthello_parse(hdr, n, &ch), CLIENTHELLO_NEED_MORE);
}

static void test_not_tls(void **state)
{
    struct clienthello ch;
    const char *http = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
    assert_int_equal(clienthello_parse((const uint8_t *)http, strlen(http), &ch),
                     CLIENTHELLO_NOT_TLS);
    assert_int_equal(clienthello_parse((const uint8_t *)"G", 1, &ch), CLIENTHELLO_NOT_TLS);
    const char *ssh = "SSH-2.0-OpenSSH_9.2\r\n";
    assert_int_equal(clienthello_parse((const uint8_t *)ssh, strlen(ssh), &ch),
                     CLIENTHELLO_NOT_TLS);
    /* SSLv2-compatible hello: two-byte header with the high bit set. */
    const uint8_t v2[] = {0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15};
    assert_int_equal(clienthello_parse(v2, sizeof(v2), &ch), CLIENTHELLO_NOT_TLS);
    const uint8_t major2[] = {0x16, 0x02};
    assert_int_equal(clienthello_parse(major2, sizeof(major2), &ch), CLIENTHELLO_NOT_TLS);
    const uint8_t appdata[] = {0x17, 0x03, 0x03, 0x00, 0x10};
    assert_int_equal(clienthello_parse(appdata, sizeof(appdata), &ch), CLIENTHELLO_NOT_TLS);
}

static void test_malformed_framing(void **state)
{
    struct clienthello ch;
    const uint8_t empty_record[] = {0x16, 0x03, 0x01, 0x00, 0x00};
    assert_int_equal(clienthello_parse(empty_record, sizeof(empty_record), &ch),
                     CLIENTHELLO_MALFORMED);
    const uint8_t huge_record[] = {0x16, 0x03, 0x01, 0x48, 0x01};
    assert_int_equal(clienthello_parse(huge_record, sizeof(huge_record), &ch),
                     CLIENTHELLO_MALFORMED);
    const uint8_t server_hello[] = {0x16, 0x03, 0x03, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00};
    assert_int_equal(clienthello_parse(server_hello, sizeof(server_hello), &ch),
                     CLIENTHELLO_MALFORMED);
    /* Judged on the first handshake byte, before the record is complete. */
    assert_int_equal(clienthello_parse(server_hello, 6, &ch), CLIENTHELLO_MALFORMED);
    /* Empty hello body. */
    const uint8_t no_body[] = {0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00};
    assert_int_equal(clienthello_parse(no_body, sizeof(no_body), &ch), CLIENTHELLO_MALFORMED);
}

/* Another content type, or a broken header, between fragments of the hello. */
static void test_malformed_interleaved_record(void **state)
{
    struct bytes *x = load_data("clienthello_openssl_sni_alpn.bin");
    struct bytes *msg = message_of(x);
    struct clienthello ch;
    const uint8_t types[] = {0x14, 0x15, 0x17};
    for (size_t i = 0; i < sizeof(types); i++) {
        struct bytes *two = frame_split(msg, 100);
        two->b[5 + 100] = types[i];
        assert_int_equal(parse(two, &ch), CLIENTHELLO_MALFORMED);
        /* Already when only the foreign header's first byte is in. */
        assert_int_equal(clienthello_parse(two->b, 5 + 100 + 1, &ch), CLIENTHELLO_MALFORMED);
        free(two);
    }
    struct bytes *two = frame_split(msg, 100);
    two->b[5 + 100 + 1] = 0x02;
    assert_int_equal(parse(two, &ch), CLIENTHELLO_MALFORMED);
    free(two);
    two = frame_split(msg, 100);
    two->b[5 + 100 + 3] = 0;
    two->b[5 + 100 + 4] = 0;
    assert_int_equal(parse(two, &ch), CLIENTHELLO_MALFORMED);
    free(two);
    free(msg);
    free(x);
}

/* Every length-prefixed vector of the body, made one byte too long for what follows. */
static void test_malformed_vector_overruns(void **state)
{
    struct clienthello ch;
    struct bytes *msg = build_hello(NULL);
    struct bytes *x = frame(msg, 16384);
    assert_int_equal(parse(x, &ch), CLIENTHELLO_OK); /* no extensions block: fine */
    assert_int_equal(ch.n_suites, 2);
    assert_false(ch.has_sni);

    const size_t body = 5 + 4;
    struct {
        size_t off;
        uint8_t val;
    } cases[] = {
        {body + 34, 33}, /* session id longer than 32 */
        {body + 34, 1},  /* session id eats into the suites */
        {body + 36, 5},  /* suites: odd length */
        {body + 36, 0},  /* suites: empty */
        {body + 36, 6},  /* suites overrun the compression methods */
        {body + 41, 0},  /* no compression methods */
        {body + 41, 2},  /* compression methods overrun */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t saved = x->b[cases[i].off];
        x->b[cases[i].off] = cases[i].val;
        if (parse(x, &ch) != CLIENTHELLO_MALFORMED)
            fail_msg("case %zu: %s", i, clienthello_result_str(parse(x, &ch)));
        x->b[cases[i].off] = saved;
    }
    free(x);
    free(msg);
}

static void test_malformed_extensions(void **state)
{
    struct clienthello ch;
    struct bytes *exts = bytes_new();

    put_u16(exts, 0xff01);
    put_u16(exts, 9); /* says 9 bytes, has 2 */
    put_u16(exts, 0);
    assert_int_equal(parse_exts(exts, &ch), CLIENTHELLO_MALFORMED);

    exts->len = 0;
    put_u16(exts, 0xff01); /* half an extension header */
    put_u8(exts, 0);
    assert_int_equal(parse_exts(exts, &ch), CLIENTHELLO_MALFORMED);

    /* Bytes after the extensions block. */
    struct bytes *msg = build_hello(NULL);
    put(msg, "\x00\x00\x00", 3);
    msg->b[3] += 3;
    struct bytes *x = frame(msg, 16384);
    assert_int_equal(parse(x, &ch), CLIENTHELLO_MALFORMED);
    free(x);
    free(msg);
    free(exts);
}

static void test_sni_extraction(void **state)
{
    struct clienthello ch;
    struct bytes *exts = bytes_new();

    put_ext_sni(exts, "Mixed-Case.Example.COM", 22);
    assert_int_equal(parse_exts(exts, &ch), CLIENTHELLO_OK);
    assert_string_equal(ch.sni, "Mixed-Case.Example.COM");

    char name[256];
    memset(name, 'a', sizeof(name));
    exts->len = 0;
    put_ext_sni(exts, name, 255);
    assert_int_equal(parse_exts(exts, &ch), CLIENTHELLO_OK);
    assert_int_equal(strlen(ch.sni), 255);

    /* An unknown name type before the host name is skipped. */
    exts->len = 0;
    put_u16(exts, 0);
    put_u16(exts, 2 + 3 + 1 + 3 + 4);
    put_u16(exts, 3 + 1 + 3 + 4);
    put_u8(exts, 7);
    put_u16(exts, 1);
    put_u8(exts, 'x');
    put_u8(exts, 0);
    put_u16(exts, 4);
    put(exts, "a.bc", 4);
    assert_int_equal(parse_exts(exts, &ch), CLIENTHELLO_OK);
    assert_string_equal(ch.sni, "a.bc");
    free(exts);
}

static void test_sni_malformed(void **state)
{
    struct clienthello ch;
    struct bytes *exts = bytes_new();
    char name[256];
    memset(name, 'a', sizeof(name));
    const struct {
        const char *name;
        size_t len;
    } bad[] = {
        {"evil.com\0.good.com", 18},
        {"tab\there.com", 12},
        {"del\x7f.com", 8},
        {"high\xc3\xa9.com", 10},
        {"sp ace.com", 10},
        {"", 0},
        {name, 256},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        exts->len = 0;
        put_ext_sni(exts, bad[i].name, bad[i].len);
        if (parse_exts(exts, &ch) != CLIENTHELLO_MALFORMED)
            fail_msg("name %zu accepted", i);
    }

    /* Two host names in one list, and two server_name extensions. */
    exts->len = 0;
    put_u16(exts, 0);
    put_u16(exts, 2 + 2 * 4);
    put_u16(exts, 2 * 4);
    put(exts,
        "\x00\x00\x01"
        "a"
        "\x00\x00\x01"
        "b",
        8);
    assert_int_equal(parse_exts(exts, &ch), CLIENTHELLO_MALFORMED);
    exts->len = 0;
    put_ext_sni(exts, "a.com", 5);
    put_ext_sni(exts, "b.com", 5);
    assert_int_equal(parse_exts(exts, &ch), CLIENTHELLO_MALFORMED);

    /* Empty server_name list, and an extension body longer than its list. */
    exts->len = 0;
    put_ext(exts, 0, "\x00\x00", 2);
    assert_int_equal(parse_exts(exts, &ch), CLIENTHELLO_MALFORMED);
    exts->len = 0;
    put_ext(exts, 0, "\x00\x04\x00\x00\x01x!", 7);
    assert_int_equal(parse_exts(exts, &ch), CLIENTHELLO_MALFORMED);
    free(exts);
}

static void test_alpn_extraction(void **state)
{
    struct clienthello ch;
    struct bytes *exts = bytes_new();

    put_ext(exts, 16, "\x00\x0c\x08http/1.1\x02h2", 14);
    assert_int_equal(parse_exts(exts, &ch), CLIENTHELLO_OK);
    assert_int_equal(ch.alpn_len, 12);
    assert_memory_equal(ch.alpn, "\x08http/1.1\x02h2", 12);
    assert_true(clienthello_offers_alpn(&ch, "h2"));
    assert_true(clienthello_offers_alpn(&ch, "http/1.1"));
    assert_false(clienthello_offers_alpn(&ch, "http/1"));
    assert_false(clienthello_offers_alpn(&ch, ""));

    /* A list longer than the kept 512 bytes: whole entries kept, the rest validated. */
    exts->len = 0;
    put_u16(exts, 16);
    put_u16(exts, 2 + 3 * 201);
    put_u16(exts, 3 * 201);
    char proto[200];
    for (int i = 0; i < 3; i++) {
        memset(proto, 'a' + i, sizeof(proto));
        put_u8(exts, sizeof(proto));
        put(exts, proto, sizeof(proto));
    }
    assert_int_equal(parse_exts(exts, &ch), CLIENTHELLO_OK);
    assert_int_equal(ch.alpn_len, 2 * 201);
    char want[201] = {0};
    memset(want, 'b', 200);
    assert_true(clienthello_offers_alpn(&ch, want));
    memset(want, 'c', 200);
    assert_false(clienthello_offers_alpn(&ch, want));

    const struct {
        const char *wire;
        size_t len;
    } bad[] = {
        {"\x00\x00", 2},          /* empty list */
        {"\x00\x03\x00\x01x", 5}, /* empty name */
        {"\x00\x03\x03h2", 5},    /* name overruns list */
        {"\x00\x04\x02h2", 5},    /* list overruns extension */
        {"\x00\x03\x02h2!", 6},   /* bytes after the list */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        exts->len = 0;
        put_ext(exts, 16, bad[i].wire, bad[i].len);
        if (parse_exts(exts, &ch) != CLIENTHELLO_MALFORMED)
            fail_msg("alpn case %zu accepted", i);
    }
    free(exts);
}

static void test_supported_versions(void **state)
{
    struct clienthello ch;
    struct bytes *exts = bytes_new();

    put_ext(exts, 43, "\x04\x7f\x1c\x03\x04", 5);
    assert_int_equal(parse_exts(exts, &ch), CLIENTHELLO_OK);
    assert_int_equal(ch.n_versions, 2);
    assert_int_equal(ch.versions[0], 0x7f1c);
    assert_int_equal(ch.versions[1], 0x0304);

    /* GREASE-heavy lists longer than 16 keep the first 16. */
    exts->len = 0;
    put_u16(exts, 43);
    put_u16(exts, 1 + 2 * 20);
    put_u8(exts, 2 * 20);
    for (unsigned i = 0; i < 20; i++)
        put_u16(exts, 0x0a0a + 0x1010 * (i % 16));
    assert_int_equal(parse_exts(exts, &ch), CLIENTHELLO_OK);
    assert_int_equal(ch.n_versions, 16);

    exts->len = 0;
    put_ext(exts, 43, "\x03\x03\x04\x03", 4);
    assert_int_equal(parse_exts(exts, &ch), CLIENTHELLO_MALFORMED);
    exts->len = 0;
    put_ext(exts, 43, "\x02\x03\x04", 3);
    put_ext(exts, 43, "\x02\x03\x04", 3);
    assert_int_equal(parse_exts(exts, &ch), CLIENTHELLO_MALFORMED);
    free(exts);
}

static void test_result_str(void **state)
{
    assert_string_equal(clienthello_result_str(CLIENTHELLO_OK), "ok");
    assert_string_equal(clienthello_result_str(CLIENTHELLO_NEED_MORE), "need more");
    assert_string_equal(clienthello_result_str(CLIENTHELLO_NOT_TLS), "not TLS");
    assert_string_equal(clienthello_result_str(CLIENTHELLO_MALFORMED), "malformed ClientHello");
    assert_string_equal(clienthello_result_str(CLIENTHELLO_TOO_BIG), "ClientHello too big");
    assert_string_equal(clienthello_result_str((enum clienthello_result)42), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_hello_whole),
        cmocka_unit_test(test_real_hello_with_trailing_bytes),
        cmocka_unit_test(test_real_hello_tls12_no_sni),
        cmocka_unit_test(test_real_hello_ffdhe8192),
        cmocka_unit_test(test_real_hello_byte_by_byte),
        cmocka_unit_test(test_real_hello_split_at_every_offset),
        cmocka_unit_test(test_real_hello_one_byte_records),
        cmocka_unit_test(test_exactly_16k_one_record),
        cmocka_unit_test(test_record_length_limit),
        cmocka_unit_test(test_big_hello_over_two_records),
        cmocka_unit_test(test_largest_and_too_big),
        cmocka_unit_test(test_need_more_header_prefixes),
        cmocka_unit_test(test_not_tls),
        cmocka_unit_test(test_malformed_framing),
        cmocka_unit_test(test_malformed_interleaved_record),
        cmocka_unit_test(test_malformed_vector_overruns),
        cmocka_unit_test(test_malformed_extensions),
        cmocka_unit_test(test_sni_extraction),
        cmocka_unit_test(test_sni_malformed),
        cmocka_unit_test(test_alpn_extraction),
        cmocka_unit_test(test_supported_versions),
        cmocka_unit_test(test_result_str),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
