/* test_mint: forged leaf fields against a generated upstream certificate, and the LRU cache. */
#include "mint.h"

#include <arpa/inet.h>
#include <ftw.h>
#include <limits.h>
#include <openssl/bn.h>
#include <openssl/conf.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>

#define DAY (24 * 3600L)

static char base[256];
static struct ca *ca;     /* EC P-256 test CA, shared by the tests */
static struct ca *rsa_ca; /* RSA-2048 test CA */
static EVP_PKEY *upstream_key;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static struct ca *make_ca(const char *sub, enum ca_key_type type)
{
    char dir[512], err[1024];
    struct ca *c;

    snprintf(dir, sizeof(dir), "%s/%s", base, sub);
    if (ca_init(dir, type, "mint test CA", false, err, sizeof(err)) < 0 ||
        (c = ca_load(dir, err, sizeof(err))) == NULL) {
        fprintf(stderr, "test CA: %s\n", err);
        return NULL;
    }
    return c;
}

static int group_setup(void **state)
{
    strcpy(base, "/tmp/sluice-test-mint-XXXXXX");
    if (mkdtemp(base) == NULL)
        return -1;
    ca = make_ca("ec", CA_KEY_EC_P256);
    rsa_ca = make_ca("rsa", CA_KEY_RSA_2048);
    upstream_key = ca_key_generate(CA_KEY_EC_P256);
    return ca != NULL && rsa_ca != NULL && upstream_key != NULL ? 0 : -1;
}

static int group_teardown(void **state)
{
    ca_free(ca);
    ca_free(rsa_ca);
    EVP_PKEY_free(upstream_key);
    return nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext;
    CONF *conf = NCONF_new(NULL); /* empty, but certificatePolicies wants one */

    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    X509V3_set_nconf(&ctx, conf);
    ext = X509V3_EXT_nconf_nid(conf, &ctx, nid, value);
    NCONF_free(conf);
    if (ext == NULL)
        fail_msg("extension %s = %s: %s", OBJ_nid2sn(nid), value,
                 ERR_reason_error_string(ERR_peek_last_error()));
    assert_true(X509_add_ext(x, ext, -1));
    X509_EXTENSION_free(ext);
}

static void add_name(X509 *x, const char *field, const char *value)
{
    assert_true(X509_NAME_add_entry_by_txt(X509_get_subject_name(x), field, MBSTRING_ASC,
                                           (const unsigned char *)value, -1, -1, 0));
}

/* An upstream certificate like a real site's: several subject fields, DNS/IP/email/URI SANs,
 * and extensions a forged leaf must not carry. sans NULL: no SAN extension. */
static X509 *make_upstream(const char *cn, const char *sans, long valid_secs)
{
    X509 *x = X509_new();

    assert_non_null(x);
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 4242);
    add_name(x, "C", "US");
    add_name(x, "O", "Example Inc");
    add_name(x, "OU", "Web");
    if (cn != NULL)
        add_name(x, "CN", cn);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_gmtime_adj(X509_getm_notBefore(x), -DAY);
    X509_gmtime_adj(X509_getm_notAfter(x), valid_secs);
    X509_set_pubkey(x, upstream_key);
    add_ext(x, NID_basic_constraints, "critical,CA:FALSE");
    add_ext(x, NID_key_usage, "critical,digitalSignature,keyEncipherment");
    add_ext(x, NID_ext_key_usage, "serverAuth,clientAuth");
    add_ext(x, NID_certificate_policies, "2.23.140.1.2.2");
    add_ext(x, NID_crl_distribution_points, "URI:http://crl.example.com/x.crl");
    add_ext(x, NID_info_access, "OCSP;URI:http://ocsp.example.com/");
    add_ext(x, NID_netscape_comment, "upstream only");
    if (sans != NULL)
        add_ext(x, NID_subject_alt_name, sans);
    assert_int_equal(ca_cert_sign(x, upstream_key), 0);
    return x;
}

#define SITE_SANS                                                                                  \
    "DNS:www.example.com,DNS:Example.com,DNS:*.cdn.example.com,IP:192.0.2.7,"                      \
    "email:admin@example.com,URI:https://example.com/"

static X509 *make_site(void)
{
    return make_upstream("www.example.com", SITE_SANS, 90 * DAY);
}

/* The leaf's SANs as "DNS:name" / "IP:addr" strings joined by ','. */
static void san_text(X509 *x, char *out, size_t outlen)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    size_t pos = 0;

    out[0] = '\0';
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
        GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
        char ip[INET6_ADDRSTRLEN] = "?";
        if (gn->type == GEN_IPADD)
            inet_ntop(gn->d.ip->length == 4 ? AF_INET : AF_INET6, gn->d.ip->data, ip, sizeof(ip));
        pos += (size_t)snprintf(out + pos, outlen - pos, "%s%s:%.*s", i ? "," : "",
                                gn->type == GEN_DNS     ? "DNS"
                                : gn->type == GEN_IPADD ? "IP"
                                                        : "OTHER",
                                gn->type == GEN_DNS ? gn->d.dNSName->length : (int)strlen(ip),
                                gn->type == GEN_DNS ? (const char *)gn->d.dNSName->data : ip);
    }
    GENERAL_NAMES_free(sans);
}

static void assert_sans(X509 *x, const char *want)
{
    char got[2048];

    san_text(x, got, sizeof(got));
    if (strcmp(got, want) != 0)
        fail_msg("SANs \"%s\", want \"%s\"", got, want);
}

static void assert_subject_cn_only(X509 *x, const char *cn)
{
    X509_NAME *name = X509_get_subject_name(x);
    char got[256];

    assert_int_equal(X509_NAME_entry_count(name), 1);
    assert_true(X509_NAME_get_text_by_NID(name, NID_commonName, got, sizeof(got)) > 0);
    assert_string_equal(got, cn);
}

static time_t time_of(const ASN1_TIME *t)
{
    struct tm tm;

    assert_true(ASN1_TIME_to_tm(t, &tm));
    return timegm(&tm);
}

static bool ext_critical(X509 *x, int nid)
{
    int i = X509_get_ext_by_NID(x, nid, -1);

    assert_true(i >= 0);
    return X509_EXTENSION_get_critical(X509_get_ext(x, i));
}

/* Verifies leaf against the CA as a TLS server certificate for host or ip. Returns the
 * verification result: X509_V_OK or the X509_V_ERR_* reason. */
static int verify_leaf(const struct ca *c, X509 *leaf, const char *host, const char *ip)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509_VERIFY_PARAM *param;
    int rc;

    assert_true(X509_STORE_add_cert(store, c->cert));
    assert_true(X509_STORE_CTX_init(ctx, store, leaf, NULL));
    assert_true(X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER));
    param = X509_STORE_CTX_get0_param(ctx);
    if (host != NULL)
        assert_true(X509_VERIFY_PARAM_set1_host(param, host, 0));
    if (ip != NULL)
        assert_true(X509_VERIFY_PARAM_set1_ip_asc(param, ip));
    rc = X509_verify_cert(ctx) == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return rc;
}

/* The fields every forged leaf has, whatever it names. */
static void assert_common_fields(const struct ca *c, struct mint_leaf *leaf, int ku)
{
    static const int allowed[] = {NID_basic_constraints,      NID_key_usage,
                                  NID_ext_key_usage,          NID_subject_alt_name,
                                  NID_subject_key_identifier, NID_authority_key_identifier};
    X509 *x = leaf->cert;
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(x);
    const ASN1_OCTET_STRING *aki = X509_get0_authority_key_id(x);
    EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen;
    BIGNUM *serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    time_t now = time(NULL);

    assert_int_equal(X509_get_version(x), X509_VERSION_3);
    assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(x), X509_get_subject_name(c->cert)), 0);
    assert_int_equal(X509_verify(x, X509_get0_pubkey(c->cert)), 1);
    /* serial: random, positive, at least 128 bits */
    assert_false(BN_is_negative(serial));
    assert_true(BN_num_bits(serial) >= 128);
    BN_free(serial);
    /* notBefore: now - 1 hour */
    assert_in_range(time_of(X509_get0_notBefore(x)), now - 3600 - 5, now - 3600 + 5);
    /* CA:FALSE, critical */
    assert_int_equal(X509_get_extension_flags(x) & EXFLAG_CA, 0);
    assert_true(X509_get_extension_flags(x) & EXFLAG_BCONS);
    assert_true(ext_critical(x, NID_basic_constraints));
    assert_int_equal(X509_check_ca(x), 0);
    assert_int_equal(X509_get_key_usage(x), ku);
    assert_true(ext_critical(x, NID_key_usage));
    assert_int_equal(X509_get_extended_key_usage(x), XKU_SSL_SERVER);
    assert_int_equal(sk_ASN1_OBJECT_num(eku), 1);
    assert_int_equal(OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 0)), NID_server_auth);
    EXTENDED_KEY_USAGE_free(eku);
    /* SKI = SHA-1 of the leaf's public key; AKI = the CA's SKI */
    assert_non_null(ski);
    assert_true(X509_pubkey_digest(x, EVP_sha1(), md, &mdlen));
    assert_int_equal(ski->length, (int)mdlen);
    assert_memory_equal(ski->data, md, mdlen);
    assert_non_null(aki);
    assert_int_equal(aki->length, (int)c->ski_len);
    assert_memory_equal(aki->data, c->ski, c->ski_len);
    /* nothing else */
    assert_int_equal(X509_get_ext_count(x), 6);
    for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
        assert_true(X509_get_ext_by_NID(x, allowed[i], -1) >= 0);
    /* its own key, never the CA's */
    assert_int_equal(X509_check_private_key(x, leaf->key), 1);
    assert_int_not_equal(EVP_PKEY_eq(leaf->key, c->key), 1);
}

static void assert_p256(EVP_PKEY *key)
{
    char group[64];

    assert_true(EVP_PKEY_is_a(key, "EC"));
    assert_true(EVP_PKEY_get_group_name(key, group, sizeof(group), NULL));
    assert_string_equal(group, "prime256v1");
}

/* ---- fields ---- */

static void test_leaf_mirrors_upstream(void **state)
{
    struct mint_cache *c = mint_cache_new(ca, CA_KEY_EC_P256, 16);
    X509 *up = make_site();
    struct mint_leaf *leaf = mint_leaf_for(c, up, "www.example.com");
    time_t now = time(NULL);

    assert_non_null(leaf);
    assert_common_fields(ca, leaf, KU_DIGITAL_SIGNATURE);
    assert_p256(leaf->key);
    assert_subject_cn_only(leaf->cert, "www.example.com");
    /* DNS and IP entries copied as they are; email and URI dropped; name covered */
    assert_sans(leaf->cert, "DNS:www.example.com,DNS:Example.com,DNS:*.cdn.example.com,"
                            "IP:192.0.2.7");
    assert_false(ext_critical(leaf->cert, NID_subject_alt_name));
    /* upstream valid 90 more days: the leaf ends with it */
    assert_int_equal(ASN1_TIME_compare(X509_get0_notAfter(leaf->cert), X509_get0_notAfter(up)), 0);
    assert_in_range(time_of(X509_get0_notAfter(leaf->cert)), now + 90 * DAY - 5,
                    now + 90 * DAY + 5);
    assert_int_equal(X509_get_signature_nid(leaf->cert), NID_ecdsa_with_SHA256);
    assert_int_equal(verify_leaf(ca, leaf->cert, "www.example.com", NULL), X509_V_OK);
    assert_int_equal(verify_leaf(ca, leaf->cert, "img.cdn.example.com", NULL), X509_V_OK);
    assert_int_equal(verify_leaf(ca, leaf->cert, NULL, "192.0.2.7"), X509_V_OK);
    assert_int_equal(verify_leaf(ca, leaf->cert, "other.example.org", NULL),
                     X509_V_ERR_HOSTNAME_MISMATCH);
    mint_leaf_release(leaf);
    X509_free(up);
    mint_cache_free(c);
}

static void test_not_after_capped_at_397_days(void **state)
{
    struct mint_cache *c = mint_cache_new(ca, CA_KEY_EC_P256, 16);
    X509 *up = make_upstream("long.example.com", "DNS:long.example.com", 1000 * DAY);
    struct mint_leaf *leaf = mint_leaf_for(c, up, "long.example.com");
    time_t now = time(NULL);

    assert_non_null(leaf);
    assert_in_range(time_of(X509_get0_notAfter(leaf->cert)), now + 397 * DAY - 5,
                    now + 397 * DAY + 5);
    mint_leaf_release(leaf);
    X509_free(up);

    /* and an upstream expiring tomorrow bounds the leaf */
    up = make_upstream("soon.example.com", "DNS:soon.example.com", DAY);
    leaf = mint_leaf_for(c, up, "soon.example.com");
    assert_non_null(leaf);
    assert_int_equal(ASN1_TIME_compare(X509_get0_notAfter(leaf->cert), X509_get0_notAfter(up)), 0);
    mint_leaf_release(leaf);
    X509_free(up);
    mint_cache_free(c);
}

static void test_requested_name_added_when_not_covered(void **state)
{
    struct mint_cache *c = mint_cache_new(ca, CA_KEY_EC_P256, 16);
    X509 *up = make_site();
    struct mint_leaf *leaf = mint_leaf_for(c, up, "Other.Example.ORG");

    assert_non_null(leaf);
    assert_subject_cn_only(leaf->cert, "www.example.com"); /* upstream's CN kept */
    assert_sans(leaf->cert, "DNS:www.example.com,DNS:Example.com,DNS:*.cdn.example.com,"
                            "IP:192.0.2.7,DNS:other.example.org");
    assert_int_equal(verify_leaf(ca, leaf->cert, "other.example.org", NULL), X509_V_OK);
    mint_leaf_release(leaf);
    X509_free(up);
    mint_cache_free(c);
}

static void expect_sans_for(struct mint_cache *c, X509 *up, const char *name, const char *want)
{
    struct mint_leaf *leaf = mint_leaf_for(c, up, name);

    assert_non_null(leaf);
    assert_sans(leaf->cert, want);
    mint_leaf_release(leaf);
}

static void test_covered_names_not_duplicated(void **state)
{
    static const char *site = "DNS:www.example.com,DNS:Example.com,DNS:*.cdn.example.com,"
                              "IP:192.0.2.7";
    struct mint_cache *c = mint_cache_new(ca, CA_KEY_EC_P256, 16);
    X509 *up = make_site();
    char want[512];

    expect_sans_for(c, up, "EXAMPLE.com", site);         /* case-insensitive */
    expect_sans_for(c, up, "www.example.com.", site);    /* trailing dot */
    expect_sans_for(c, up, "img.cdn.example.com", site); /* wildcard, one label */
    expect_sans_for(c, up, NULL, site);                  /* no name requested */
    expect_sans_for(c, up, "192.0.2.7", site);           /* IP SAN */
    /* a wildcard covers exactly one label */
    snprintf(want, sizeof(want), "%s,DNS:a.b.cdn.example.com", site);
    expect_sans_for(c, up, "a.b.cdn.example.com", want);
    snprintf(want, sizeof(want), "%s,DNS:cdn.example.com", site);
    expect_sans_for(c, up, "cdn.example.com", want);
    X509_free(up);
    mint_cache_free(c);
}

static void test_ip_literal_becomes_ip_san(void **state)
{
    struct mint_cache *c = mint_cache_new(ca, CA_KEY_EC_P256, 16);
    /* a DNS SAN spelling an address does not cover the address */
    X509 *up = make_upstream("198.51.100.1", "DNS:198.51.100.1", 30 * DAY);
    struct mint_leaf *leaf = mint_leaf_for(c, up, "198.51.100.1");
    GENERAL_NAMES *sans;

    assert_non_null(leaf);
    assert_sans(leaf->cert, "DNS:198.51.100.1,IP:198.51.100.1");
    sans = X509_get_ext_d2i(leaf->cert, NID_subject_alt_name, NULL, NULL);
    assert_int_equal(sk_GENERAL_NAME_value(sans, 1)->d.ip->length, 4);
    GENERAL_NAMES_free(sans);
    assert_int_equal(verify_leaf(ca, leaf->cert, NULL, "198.51.100.1"), X509_V_OK);
    mint_leaf_release(leaf);

    leaf = mint_leaf_for(c, up, "2001:DB8::1");
    assert_non_null(leaf);
    assert_sans(leaf->cert, "DNS:198.51.100.1,IP:2001:db8::1");
    assert_int_equal(verify_leaf(ca, leaf->cert, NULL, "2001:db8::1"), X509_V_OK);
    mint_leaf_release(leaf);
    X509_free(up);
    mint_cache_free(c);
}

static void test_upstream_without_cn(void **state)
{
    static const char *long_name =
        "a-very-long-label-that-goes-on-and-on.another-long-label.example.com"; /* 68 chars */
    struct mint_cache *c = mint_cache_new(ca, CA_KEY_EC_P256, 16);
    X509 *up = make_upstream(NULL, "DNS:api.example.com", 30 * DAY);
    struct mint_leaf *leaf = mint_leaf_for(c, up, "api.example.com");

    assert_non_null(leaf);
    assert_subject_cn_only(leaf->cert, "api.example.com"); /* not C, O or OU */
    assert_sans(leaf->cert, "DNS:api.example.com");
    mint_leaf_release(leaf);

    /* too long for a CN: empty subject, the SAN carries the name and is critical */
    assert_true(strlen(long_name) > 64);
    leaf = mint_leaf_for(c, up, long_name);
    assert_non_null(leaf);
    assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(leaf->cert)), 0);
    assert_true(ext_critical(leaf->cert, NID_subject_alt_name));
    assert_int_equal(verify_leaf(ca, leaf->cert, long_name, NULL), X509_V_OK);
    mint_leaf_release(leaf);
    X509_free(up);

    /* no SAN extension upstream at all: the requested name is the only SAN */
    up = make_upstream("legacy.example.com", NULL, 30 * DAY);
    leaf = mint_leaf_for(c, up, "legacy.example.com");
    assert_non_null(leaf);
    assert_sans(leaf->cert, "DNS:legacy.example.com");
    assert_int_equal(verify_leaf(ca, leaf->cert, "legacy.example.com", NULL), X509_V_OK);
    mint_leaf_release(leaf);
    X509_free(up);
    mint_cache_free(c);
}

static void test_fresh_key_and_serial_per_leaf(void **state)
{
    struct mint_cache *c = mint_cache_new(ca, CA_KEY_EC_P256, 16);
    X509 *up1 = make_site();
    X509 *up2 = make_upstream("shop.example.net", "DNS:shop.example.net", 30 * DAY);
    struct mint_leaf *a = mint_leaf_for(c, up1, "www.example.com");
    struct mint_leaf *b = mint_leaf_for(c, up2, "shop.example.net");
    struct mint_leaf *d = mint_leaf_for(c, up1, "example.com"); /* same upstream, other name */

    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(d);
    assert_int_not_equal(EVP_PKEY_eq(a->key, b->key), 1);
    assert_int_not_equal(EVP_PKEY_eq(a->key, d->key), 1);
    assert_int_not_equal(
        ASN1_INTEGER_cmp(X509_get0_serialNumber(a->cert), X509_get0_serialNumber(b->cert)), 0);
    assert_int_not_equal(
        ASN1_INTEGER_cmp(X509_get0_serialNumber(a->cert), X509_get0_serialNumber(d->cert)), 0);
    mint_leaf_release(a);
    mint_leaf_release(b);
    mint_leaf_release(d);
    X509_free(up1);
    X509_free(up2);
    mint_cache_free(c);
}

static void test_rsa_leaf_keys(void **state)
{
    struct mint_cache *c = mint_cache_new(ca, CA_KEY_RSA_2048, 4);
    X509 *up = make_site();
    struct mint_leaf *leaf = mint_leaf_for(c, up, "www.example.com");

    assert_non_null(leaf);
    assert_common_fields(ca, leaf, KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT);
    assert_true(EVP_PKEY_is_a(leaf->key, "RSA"));
    assert_int_equal(EVP_PKEY_get_bits(leaf->key), 2048);
    mint_leaf_release(leaf);
    X509_free(up);
    mint_cache_free(c);
}

static void test_rsa_ca_signs_sha256(void **state)
{
    struct mint_cache *c = mint_cache_new(rsa_ca, CA_KEY_EC_P256, 4);
    X509 *up = make_site();
    struct mint_leaf *leaf = mint_leaf_for(c, up, "www.example.com");

    assert_non_null(leaf);
    assert_common_fields(rsa_ca, leaf, KU_DIGITAL_SIGNATURE);
    assert_int_equal(X509_get_signature_nid(leaf->cert), NID_sha256WithRSAEncryption);
    assert_int_equal(verify_leaf(rsa_ca, leaf->cert, "www.example.com", NULL), X509_V_OK);
    mint_leaf_release(leaf);
    X509_free(up);
    mint_cache_free(c);
}

/* An operator's CA with an Ed25519 key, built in memory: signing takes no digest. */
static struct ca *make_ed25519_ca(void)
{
    struct ca *c = calloc(1, sizeof(*c));
    const ASN1_OCTET_STRING *ski;

    assert_non_null(c);
    c->key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    c->cert = X509_new();
    assert_non_null(c->key);
    X509_set_version(c->cert, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(c->cert), 1);
    add_name(c->cert, "CN", "Ed25519 CA");
    X509_set_issuer_name(c->cert, X509_get_subject_name(c->cert));
    X509_gmtime_adj(X509_getm_notBefore(c->cert), -DAY);
    X509_gmtime_adj(X509_getm_notAfter(c->cert), 30 * DAY);
    X509_set_pubkey(c->cert, c->key);
    add_ext(c->cert, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(c->cert, NID_subject_key_identifier, "hash");
    assert_int_equal(ca_cert_sign(c->cert, c->key), 0);
    ski = X509_get0_subject_key_id(c->cert);
    assert_non_null(ski);
    memcpy(c->ski, ski->data, (size_t)ski->length);
    c->ski_len = (size_t)ski->length;
    return c;
}

static void test_ed25519_ca(void **state)
{
    struct ca *ed = make_ed25519_ca();
    struct mint_cache *c = mint_cache_new(ed, CA_KEY_EC_P256, 4);
    X509 *up = make_site();
    struct mint_leaf *leaf = mint_leaf_for(c, up, "www.example.com");

    assert_non_null(leaf);
    assert_common_fields(ed, leaf, KU_DIGITAL_SIGNATURE);
    assert_int_equal(X509_get_signature_nid(leaf->cert), NID_ED25519);
    mint_leaf_release(leaf);
    X509_free(up);
    mint_cache_free(c);
    ca_free(ed);
}

static void test_leaf_for_name(void **state)
{
    struct mint_cache *c = mint_cache_new(ca, CA_KEY_EC_P256, 16);
    X509 *up = make_site();
    struct mint_leaf *leaf = mint_leaf_for_name(c, "WWW.example.com");
    struct mint_leaf *mirrored, *again;
    time_t now = time(NULL);

    assert_non_null(leaf);
    assert_common_fields(ca, leaf, KU_DIGITAL_SIGNATURE);
    assert_p256(leaf->key);
    assert_subject_cn_only(leaf->cert, "www.example.com");
    assert_sans(leaf->cert, "DNS:www.example.com");
    assert_in_range(time_of(X509_get0_notAfter(leaf->cert)), now + DAY - 5, now + DAY + 5);
    assert_int_equal(verify_leaf(ca, leaf->cert, "www.example.com", NULL), X509_V_OK);
    /* cached under its own key: not confused with the mirrored leaf for the same name */
    again = mint_leaf_for_name(c, "www.example.com");
    assert_ptr_equal(again, leaf);
    mirrored = mint_leaf_for(c, up, "www.example.com");
    assert_ptr_not_equal(mirrored, leaf);
    assert_int_equal(mint_cache_size(c), 2);
    mint_leaf_release(again);
    mint_leaf_release(mirrored);
    mint_leaf_release(leaf);

    leaf = mint_leaf_for_name(c, "::1");
    assert_non_null(leaf);
    assert_sans(leaf->cert, "IP:::1");
    mint_leaf_release(leaf);
    X509_free(up);
    mint_cache_free(c);
}

static void test_rejects_unusable_names(void **state)
{
    struct mint_cache *c = mint_cache_new(ca, CA_KEY_EC_P256, 16);
    X509 *up = make_site();
    char huge[300];

    memset(huge, 'a', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    assert_null(mint_leaf_for_name(c, NULL));
    assert_null(mint_leaf_for_name(c, ""));
    assert_null(mint_leaf_for_name(c, "evil name\r\nX-Injected: 1"));
    assert_null(mint_leaf_for_name(c, "*.example.com"));
    assert_null(mint_leaf_for_name(c, huge));
    assert_null(mint_leaf_for(c, up, "bad/name"));
    assert_null(mint_leaf_for(c, NULL, "www.example.com"));
    assert_int_equal(mint_cache_size(c), 0);
    X509_free(up);
    mint_cache_free(c);
}

/* ---- cache ---- */

static void test_cache_hit_returns_same_leaf(void **state)
{
    struct mint_cache *c = mint_cache_new(ca, CA_KEY_EC_P256, 16);
    X509 *up = make_site();
    X509 *up_copy = X509_dup(up); /* another object, same DER: same key */
    struct mint_leaf *a = mint_leaf_for(c, up, "www.example.com");
    struct mint_leaf *b, *d;

    assert_non_null(a);
    assert_int_equal(a->refs, 2); /* the cache's and ours */
    b = mint_leaf_for(c, up_copy, "WWW.EXAMPLE.COM");
    assert_ptr_equal(b, a);
    assert_ptr_equal(b->cert, a->cert);
    assert_int_equal(a->refs, 3);
    assert_int_equal(mint_cache_size(c), 1);
    d = mint_leaf_for(c, up, "example.com");
    assert_ptr_not_equal(d, a);
    assert_int_equal(mint_cache_size(c), 2);
    mint_leaf_release(a);
    mint_leaf_release(b);
    mint_leaf_release(d);
    X509_free(up_copy);
    X509_free(up);
    mint_cache_free(c);
}

static void test_cache_evicts_least_recently_used(void **state)
{
    struct mint_cache *c = mint_cache_new(ca, CA_KEY_EC_P256, 3);
    X509 *up = make_upstream("*.example.com", "DNS:*.example.com", 30 * DAY);
    struct mint_leaf *a = mint_leaf_for(c, up, "a.example.com");
    struct mint_leaf *b = mint_leaf_for(c, up, "b.example.com");
    struct mint_leaf *d = mint_leaf_for(c, up, "d.example.com");
    struct mint_leaf *x, *e;

    /* we keep our references so that no address is reused by a later leaf */
    assert_int_equal(mint_cache_size(c), 3);
    x = mint_leaf_for(c, up, "a.example.com"); /* a is now the most recent: FIFO would drop it */
    assert_ptr_equal(x, a);
    mint_leaf_release(x);
    e = mint_leaf_for(c, up, "e.example.com"); /* full: drops b, the least recently used */
    assert_int_equal(mint_cache_size(c), 3);
    assert_int_equal(b->refs, 1); /* only ours is left */
    assert_int_equal(a->refs, 2);
    x = mint_leaf_for(c, up, "a.example.com");
    assert_ptr_equal(x, a);
    mint_leaf_release(x);
    x = mint_leaf_for(c, up, "d.example.com");
    assert_ptr_equal(x, d);
    mint_leaf_release(x);
    x = mint_leaf_for(c, up, "b.example.com"); /* forged again, evicting e */
    assert_ptr_not_equal(x, b);
    assert_int_equal(e->refs, 1);
    assert_int_equal(mint_cache_size(c), 3);
    mint_leaf_release(x);
    mint_leaf_release(a);
    mint_leaf_release(b);
    mint_leaf_release(d);
    mint_leaf_release(e);
    X509_free(up);
    mint_cache_free(c);
}

static void test_held_leaf_survives_eviction_and_cache_free(void **state)
{
    struct mint_cache *c = mint_cache_new(ca, CA_KEY_EC_P256, 1);
    X509 *up = make_site();
    struct mint_leaf *held = mint_leaf_for(c, up, "www.example.com");
    struct mint_leaf *other = mint_leaf_for(c, up, "example.com"); /* evicts held */

    assert_non_null(held);
    assert_non_null(other);
    assert_int_equal(mint_cache_size(c), 1);
    assert_int_equal(held->refs, 1);
    /* still whole: ASan would flag a use after free here */
    assert_int_equal(X509_verify(held->cert, X509_get0_pubkey(ca->cert)), 1);
    assert_int_equal(X509_check_private_key(held->cert, held->key), 1);
    mint_cache_free(c);
    assert_int_equal(other->refs, 1);
    assert_int_equal(X509_check_private_key(other->cert, other->key), 1);
    mint_leaf_release(held);
    mint_leaf_release(other);
    X509_free(up);
}

static void test_cache_capacity_zero_caches_nothing(void **state)
{
    struct mint_cache *c = mint_cache_new(ca, CA_KEY_EC_P256, 0);
    X509 *up = make_site();
    struct mint_leaf *a = mint_leaf_for(c, up, "www.example.com");
    struct mint_leaf *b = mint_leaf_for(c, up, "www.example.com");

    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_int_equal(a->refs, 1);
    assert_int_equal(mint_cache_size(c), 0);
    mint_leaf_release(a);
    mint_leaf_release(b);
    X509_free(up);
    mint_cache_free(c);
}

static void test_cache_many_entries(void **state)
{
    struct mint_cache *c = mint_cache_new(ca, CA_KEY_EC_P256, 64);
    X509 *up = make_upstream("*.example.com", "DNS:*.example.com", 30 * DAY);
    struct mint_leaf *first[64];
    char name[64];

    /* more entries than the table's initial buckets: chains and eviction stay consistent */
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 64; i++) {
            snprintf(name, sizeof(name), "h%d.example.com", i);
            struct mint_leaf *l = mint_leaf_for(c, up, name);
            assert_non_null(l);
            if (round == 0)
                first[i] = l;
            else
                assert_ptr_equal(l, first[i]);
            if (round == 1) {
                mint_leaf_release(l);
                mint_leaf_release(first[i]);
            }
        }
    }
    assert_int_equal(mint_cache_size(c), 64);
    X509_free(up);
    mint_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_leaf_mirrors_upstream),
        cmocka_unit_test(test_not_after_capped_at_397_days),
        cmocka_unit_test(test_requested_name_added_when_not_covered),
        cmocka_unit_test(test_covered_names_not_duplicated),
        cmocka_unit_test(test_ip_literal_becomes_ip_san),
        cmocka_unit_test(test_upstream_without_cn),
        cmocka_unit_test(test_fresh_key_and_serial_per_leaf),
        cmocka_unit_test(test_rsa_leaf_keys),
        cmocka_unit_test(test_rsa_ca_signs_sha256),
        cmocka_unit_test(test_ed25519_ca),
        cmocka_unit_test(test_leaf_for_name),
        cmocka_unit_test(test_rejects_unusable_names),
        cmocka_unit_test(test_cache_hit_returns_same_leaf),
        cmocka_unit_test(test_cache_evicts_least_recently_used),
        cmocka_unit_test(test_held_leaf_survives_eviction_and_cache_free),
        cmocka_unit_test(test_cache_capacity_zero_caches_nothing),
        cmocka_unit_test(test_cache_many_entries),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
