/* test_ca: root CA creation, loading checks, export and the `sluice ca` command line. */
#include "ca.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509v3.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static char base[256]; /* per-test temporary directory */
static char err[2048];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    strcpy(base, "/tmp/sluice-test-ca-XXXXXX");
    assert_non_null(mkdtemp(base));
    umask(022); /* the usual umask: a careless fopen would make ca.key 0644 */
    err[0] = '\0';
    return 0;
}

static int teardown(void **state)
{
    return nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Returns a path below the test's temporary directory, in one of 32 rotating buffers:
 * copy it when it must outlive later calls. */
static const char *tpath(const char *fmt, ...)
{
    static char bufs[32][PATH_MAX];
    static int next;
    char *buf = bufs[next++ % 32];
    char rel[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(rel, sizeof(rel), fmt, ap);
    va_end(ap);
    snprintf(buf, PATH_MAX, "%s/%s", base, rel);
    return buf;
}

/* Reads a whole file into a malloc'ed buffer (NUL-terminated); *len gets its size. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    rewind(f);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    if (len != NULL)
        *len = (size_t)n;
    return buf;
}

static void spit(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static mode_t mode_of(const char *path)
{
    struct stat st;

    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 07777;
}

static int count_entries(const char *dir)
{
    struct dirent **list;
    int n = scandir(dir, &list, NULL, NULL);

    assert_true(n >= 0);
    for (int i = 0; i < n; i++)
        free(list[i]);
    free(list);
    return n - 2; /* . and .. */
}

static struct ca *init_and_load(const char *dir, enum ca_key_type type, const char *cn)
{
    struct ca *ca;

    assert_int_equal(ca_init(dir, type, cn, false, err, sizeof(err)), 0);
    ca = ca_load(dir, err, sizeof(err));
    if (ca == NULL)
        fail_msg("ca_load: %s", err);
    return ca;
}

static int serial_bits(const X509 *cert)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    int bits;

    assert_non_null(bn);
    assert_false(BN_is_negative(bn));
    bits = BN_num_bits(bn);
    BN_free(bn);
    return bits;
}

static int ext_critical(const X509 *cert, int nid)
{
    int i = X509_get_ext_by_NID(cert, nid, -1);

    assert_true(i >= 0);
    return X509_EXTENSION_get_critical(X509_get_ext(cert, i));
}

static void name_text(const X509 *cert, int nid, char *out, size_t outlen)
{
    assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(cert), nid, out, (int)outlen) >= 0);
}

/* ---- init ---- */

static void test_init_creates_files_with_private_modes(void **state)
{
    const char *dir = tpath("a/b/ca");
    char *key;

    assert_false(ca_exists(dir));
    assert_int_equal(ca_init(dir, CA_KEY_EC_P256, NULL, false, err, sizeof(err)), 0);
    assert_true(ca_exists(dir));
    assert_int_equal(mode_of(dir), 0700);
    assert_int_equal(mode_of(tpath("a")), 0700);
    assert_int_equal(mode_of(tpath("a/b/ca/ca.key")), 0600);
    assert_int_equal(mode_of(tpath("a/b/ca/ca.pem")), 0644);
    key = slurp(tpath("a/b/ca/ca.key"), NULL);
    assert_non_null(strstr(key, "-----BEGIN PRIVATE KEY-----")); /* PKCS#8, unencrypted */
    free(key);
    assert_int_equal(count_entries(dir), 2); /* no temporary file left behind */
}

static void test_init_cert_fields(void **state)
{
    struct ca *ca = init_and_load(tpath("ca"), CA_KEY_EC_P256, NULL);
    X509 *c = ca->cert;
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(c);
    const ASN1_OCTET_STRING *aki = X509_get0_authority_key_id(c);
    char cn[128], o[64], want[64], host[256] = "";
    int days = 0, secs = 0;
    time_t now = time(NULL);
    struct tm tm;

    assert_int_equal(X509_get_version(c), X509_VERSION_3);
    assert_true(X509_get_extension_flags(c) & EXFLAG_CA);
    assert_int_equal(X509_check_ca(c), 1);
    assert_true(ext_critical(c, NID_basic_constraints));
    assert_int_equal(X509_get_key_usage(c), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
    assert_true(ext_critical(c, NID_key_usage));
    assert_non_null(ski);
    assert_int_equal(ca->ski_len, (size_t)ski->length);
    assert_memory_equal(ca->ski, ski->data, ca->ski_len);
    assert_non_null(aki);
    assert_int_equal(ASN1_OCTET_STRING_cmp(aki, ski), 0);
    assert_true(serial_bits(c) >= 128);
    assert_int_equal(X509_get_signature_nid(c), NID_ecdsa_with_SHA256);
    assert_int_equal(X509_NAME_cmp(X509_get_subject_name(c), X509_get_issuer_name(c)), 0);
    assert_int_equal(X509_verify(c, X509_get0_pubkey(c)), 1);
    /* ten years, starting a little in the past */
    assert_true(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(c), X509_get0_notAfter(c)));
    assert_in_range(days, 3650, 3653);
    assert_true(X509_cmp_time(X509_get0_notBefore(c), &now) < 0);
    /* subject: O=sluice, CN "sluice CA <hostname> <date>" */
    name_text(c, NID_organizationName, o, sizeof(o));
    assert_string_equal(o, "sluice");
    name_text(c, NID_commonName, cn, sizeof(cn));
    gethostname(host, sizeof(host) - 1);
    gmtime_r(&now, &tm);
    strftime(want, sizeof(want), "%Y-%m-%d", &tm);
    assert_true(strncmp(cn, "sluice CA ", 10) == 0);
    assert_non_null(strstr(cn, want));
    assert_true(strncmp(cn + 10, host, strlen(cn) - 11 - strlen(want)) == 0);
    assert_true(strlen(cn) <= 64);
    assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(c)), 2);
    ca_free(ca);
}

static void test_init_custom_name(void **state)
{
    struct ca *ca = init_and_load(tpath("ca"), CA_KEY_EC_P256, "Example Corp interception CA");
    char cn[128];

    name_text(ca->cert, NID_commonName, cn, sizeof(cn));
    assert_string_equal(cn, "Example Corp interception CA");
    ca_free(ca);
    /* longer than a CN can hold: refused, nothing written */
    assert_int_equal(ca_init(tpath("long"), CA_KEY_EC_P256,
                             "0123456789012345678901234567890123456789012345678901234567890123456",
                             false, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "--name"));
    assert_false(ca_exists(tpath("long")));
}

static void check_key_type(enum ca_key_type type, const char *alg, int bits, int sig_nid)
{
    const char *dir = tpath("ca-%s", ca_key_type_name(type));
    struct ca *ca = init_and_load(dir, type, NULL);

    assert_true(EVP_PKEY_is_a(ca->key, alg));
    assert_int_equal(EVP_PKEY_get_bits(ca->key), bits);
    assert_int_equal(X509_get_signature_nid(ca->cert), sig_nid);
    assert_int_equal(X509_verify(ca->cert, ca->key), 1);
    assert_int_equal(mode_of(tpath("ca-%s/ca.key", ca_key_type_name(type))), 0600);
    ca_free(ca);
}

static void test_init_each_key_type(void **state)
{
    enum ca_key_type t;

    check_key_type(CA_KEY_EC_P256, "EC", 256, NID_ecdsa_with_SHA256);
    check_key_type(CA_KEY_RSA_2048, "RSA", 2048, NID_sha256WithRSAEncryption);
    check_key_type(CA_KEY_RSA_3072, "RSA", 3072, NID_sha256WithRSAEncryption);
    assert_int_equal(ca_key_type_parse("rsa-3072", &t), 0);
    assert_int_equal(t, CA_KEY_RSA_3072);
    assert_int_equal(ca_key_type_parse("ec-p256", &t), 0);
    assert_int_equal(t, CA_KEY_EC_P256);
    assert_int_equal(ca_key_type_parse("rsa-1024", &t), -1);
    assert_string_equal(ca_key_type_name(CA_KEY_RSA_2048), "rsa-2048");
}

static void test_init_refuses_existing_without_force(void **state)
{
    const char *dir = tpath("ca");
    char *key1, *key2, *key3, *cert1;

    assert_int_equal(ca_init(dir, CA_KEY_EC_P256, NULL, false, err, sizeof(err)), 0);
    key1 = slurp(tpath("ca/ca.key"), NULL);
    cert1 = slurp(tpath("ca/ca.pem"), NULL);
    assert_int_equal(ca_init(dir, CA_KEY_EC_P256, NULL, false, err, sizeof(err)), -1);
    assert_non_null(strstr(err, dir));
    assert_non_null(strstr(err, "--force"));
    key2 = slurp(tpath("ca/ca.key"), NULL);
    assert_string_equal(key1, key2); /* untouched */
    free(key2);
    key2 = slurp(tpath("ca/ca.pem"), NULL);
    assert_string_equal(cert1, key2);
    free(key2);

    assert_int_equal(ca_init(dir, CA_KEY_EC_P256, NULL, true, err, sizeof(err)), 0);
    key3 = slurp(tpath("ca/ca.key"), NULL);
    assert_string_not_equal(key1, key3); /* a fresh key */
    assert_int_equal(mode_of(tpath("ca/ca.key")), 0600);
    free(key1);
    free(key3);
    free(cert1);
}

static void test_init_refuses_lone_key(void **state)
{
    const char *dir = tpath("ca");

    assert_int_equal(mkdir(dir, 0700), 0);
    spit(tpath("ca/ca.key"), "operator's key\n", 15, 0600);
    assert_true(ca_exists(dir));
    assert_int_equal(ca_init(dir, CA_KEY_EC_P256, NULL, false, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "--force"));
    assert_int_equal(access(tpath("ca/ca.pem"), F_OK), -1);
}

static void test_two_inits_never_share_a_key(void **state)
{
    struct ca *a = init_and_load(tpath("a"), CA_KEY_EC_P256, "same");
    struct ca *b = init_and_load(tpath("b"), CA_KEY_EC_P256, "same");
    BIGNUM *sa = ASN1_INTEGER_to_BN(X509_get0_serialNumber(a->cert), NULL);
    BIGNUM *sb = ASN1_INTEGER_to_BN(X509_get0_serialNumber(b->cert), NULL);

    assert_int_not_equal(EVP_PKEY_eq(a->key, b->key), 1);
    assert_int_not_equal(BN_cmp(sa, sb), 0);
    assert_false(a->ski_len == b->ski_len && memcmp(a->ski, b->ski, a->ski_len) == 0);
    BN_free(sa);
    BN_free(sb);
    ca_free(a);
    ca_free(b);
}

/* ---- load ---- */

static void test_load_refuses_key_readable_by_others(void **state)
{
    const char *dir = tpath("ca");
    const char *key = tpath("ca/ca.key");
    char want[PATH_MAX + 32];

    assert_int_equal(ca_init(dir, CA_KEY_EC_P256, NULL, false, err, sizeof(err)), 0);
    assert_int_equal(chmod(key, 0644), 0);
    assert_null(ca_load(dir, err, sizeof(err)));
    assert_non_null(strstr(err, key));
    assert_non_null(strstr(err, "0644"));
    assert_non_null(strstr(err, "readable by group or others"));
    snprintf(want, sizeof(want), "chmod 600 %s", key);
    assert_non_null(strstr(err, want));

    assert_int_equal(chmod(key, 0640), 0); /* group alone is enough to refuse */
    assert_null(ca_load(dir, err, sizeof(err)));
    assert_non_null(strstr(err, "0640"));
    assert_int_equal(chmod(key, 0600), 0);
    struct ca *ca = ca_load(dir, err, sizeof(err));
    assert_non_null(ca);
    ca_free(ca);
}

static void test_load_missing_files(void **state)
{
    const char *dir = tpath("nowhere");

    assert_null(ca_load(dir, err, sizeof(err)));
    assert_non_null(strstr(err, tpath("nowhere/ca.pem")));
    assert_non_null(strstr(err, "does not exist"));
    assert_non_null(strstr(err, "sluice ca init"));

    assert_int_equal(ca_init(tpath("ca"), CA_KEY_EC_P256, NULL, false, err, sizeof(err)), 0);
    assert_int_equal(unlink(tpath("ca/ca.key")), 0);
    assert_null(ca_load(tpath("ca"), err, sizeof(err)));
    assert_non_null(strstr(err, tpath("ca/ca.key")));
    /* export needs only the certificate */
    struct ca *ca = ca_load_cert(tpath("ca"), err, sizeof(err));
    assert_non_null(ca);
    assert_null(ca->key);
    ca_free(ca);
}

static void test_load_refuses_mismatched_key(void **state)
{
    char *other;
    size_t len;

    assert_int_equal(ca_init(tpath("a"), CA_KEY_EC_P256, NULL, false, err, sizeof(err)), 0);
    assert_int_equal(ca_init(tpath("b"), CA_KEY_EC_P256, NULL, false, err, sizeof(err)), 0);
    other = slurp(tpath("b/ca.key"), &len);
    spit(tpath("a/ca.key"), other, len, 0600);
    free(other);
    assert_null(ca_load(tpath("a"), err, sizeof(err)));
    assert_non_null(strstr(err, "does not match"));
    assert_non_null(strstr(err, tpath("a/ca.key")));
    assert_int_equal(ERR_peek_error(), 0); /* the queue is not left for the next caller */
}

static void test_load_refuses_garbage_and_encrypted_keys(void **state)
{
    const char *dir = tpath("ca");
    EVP_PKEY *key = ca_key_generate(CA_KEY_EC_P256);
    BIO *mem = BIO_new(BIO_s_mem());
    char *data;
    long len;

    assert_int_equal(ca_init(dir, CA_KEY_EC_P256, NULL, false, err, sizeof(err)), 0);
    spit(tpath("ca/ca.key"), "not a key\n", 10, 0600);
    assert_null(ca_load(dir, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot read CA key"));

    assert_true(PEM_write_bio_PKCS8PrivateKey(mem, key, EVP_aes_256_cbc(), NULL, 0, NULL,
                                              (void *)"secret"));
    len = BIO_get_mem_data(mem, &data);
    spit(tpath("ca/ca.key"), data, (size_t)len, 0600);
    assert_null(ca_load(dir, err, sizeof(err))); /* and no passphrase prompt */
    assert_non_null(strstr(err, "encrypted"));
    BIO_free(mem);
    EVP_PKEY_free(key);
}

/* Writes an operator-made certificate: optionally a CA, without SKI, and its key. */
static void write_operator_ca(const char *rel, EVP_PKEY *key, bool is_ca)
{
    X509 *x = X509_new();
    X509V3_CTX ctx;
    X509_EXTENSION *ext;
    BIO *mem = BIO_new(BIO_s_mem());
    char *data;
    long len;

    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"Operator CA", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    ext = X509V3_EXT_nconf_nid(NULL, &ctx, NID_basic_constraints,
                               is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    assert_int_equal(ca_cert_sign(x, key), 0);
    assert_int_equal(mkdir(tpath("%s", rel), 0700), 0);
    PEM_write_bio_X509(mem, x);
    len = BIO_get_mem_data(mem, &data);
    spit(tpath("%s/ca.pem", rel), data, (size_t)len, 0644);
    BIO_reset(mem);
    PEM_write_bio_PrivateKey(mem, key, NULL, NULL, 0, NULL, NULL);
    len = BIO_get_mem_data(mem, &data);
    spit(tpath("%s/ca.key", rel), data, (size_t)len, 0600);
    BIO_free(mem);
    X509_free(x);
}

static void test_load_refuses_non_ca(void **state)
{
    EVP_PKEY *key = ca_key_generate(CA_KEY_EC_P256);

    write_operator_ca("leaf", key, false);
    assert_null(ca_load(tpath("leaf"), err, sizeof(err)));
    assert_non_null(strstr(err, "not a CA"));
    assert_non_null(strstr(err, tpath("leaf/ca.pem")));
    EVP_PKEY_free(key);
}

static void test_load_operator_ca_any_key_type(void **state)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len;
    struct ca *ca;

    assert_non_null(key);
    write_operator_ca("op", key, true);
    ca = ca_load(tpath("op"), err, sizeof(err));
    if (ca == NULL)
        fail_msg("ca_load: %s", err);
    /* no SKI extension: computed from the public key (RFC 5280 method 1) */
    assert_null(X509_get0_subject_key_id(ca->cert));
    assert_true(X509_pubkey_digest(ca->cert, EVP_sha1(), md, &len));
    assert_int_equal(ca->ski_len, len);
    assert_memory_equal(ca->ski, md, len);
    assert_true(EVP_PKEY_is_a(ca->key, "ED25519"));
    ca_free(ca);
    EVP_PKEY_free(key);
}

/* ---- export ---- */

static X509 *export_and_read_der(const struct ca *ca, const char *path)
{
    const unsigned char *p;
    size_t len;
    char *buf;
    X509 *x;

    assert_int_equal(ca_export(ca, CA_EXPORT_DER, path, err, sizeof(err)), 0);
    buf = slurp(path, &len);
    p = (const unsigned char *)buf;
    x = d2i_X509(NULL, &p, (long)len);
    assert_ptr_equal(p, buf + len); /* nothing but the certificate */
    free(buf);
    return x;
}

static void test_export_pem_and_der_round_trip(void **state)
{
    struct ca *ca = init_and_load(tpath("ca"), CA_KEY_EC_P256, NULL);
    const char *pem = tpath("out.pem");
    char *text;
    X509 *x;
    BIO *in;

    assert_int_equal(ca_export(ca, CA_EXPORT_PEM, pem, err, sizeof(err)), 0);
    text = slurp(pem, NULL);
    assert_null(strstr(text, "PRIVATE KEY"));
    in = BIO_new_mem_buf(text, -1);
    x = PEM_read_bio_X509(in, NULL, NULL, NULL);
    assert_non_null(x);
    assert_int_equal(X509_cmp(x, ca->cert), 0);
    X509_free(x);
    BIO_free(in);
    free(text);

    x = export_and_read_der(ca, tpath("out.cer"));
    assert_non_null(x);
    assert_int_equal(X509_cmp(x, ca->cert), 0);
    X509_free(x);

    assert_int_equal(ca_export(ca, CA_EXPORT_PEM, tpath("no/such/dir/x.pem"), err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, tpath("no/such/dir/x.pem")));
    ca_free(ca);
}

/* Counts the bags of p12 by type; checks the certificate bag holds cert with a name. */
static void check_p12_bags(PKCS12 *p12, X509 *cert, int *n_certs, int *n_keys)
{
    STACK_OF(PKCS7) *safes = PKCS12_unpack_authsafes(p12);

    assert_non_null(safes);
    *n_certs = *n_keys = 0;
    for (int i = 0; i < sk_PKCS7_num(safes); i++) {
        PKCS7 *p7 = sk_PKCS7_value(safes, i);
        STACK_OF(PKCS12_SAFEBAG) *bags = OBJ_obj2nid(p7->type) == NID_pkcs7_data
                                             ? PKCS12_unpack_p7data(p7)
                                             : PKCS12_unpack_p7encdata(p7, "", 0);
        assert_non_null(bags);
        for (int j = 0; j < sk_PKCS12_SAFEBAG_num(bags); j++) {
            PKCS12_SAFEBAG *bag = sk_PKCS12_SAFEBAG_value(bags, j);
            int nid = PKCS12_SAFEBAG_get_nid(bag);
            if (nid == NID_keyBag || nid == NID_pkcs8ShroudedKeyBag)
                (*n_keys)++;
            if (nid != NID_certBag)
                continue;
            (*n_certs)++;
            X509 *x = PKCS12_SAFEBAG_get1_cert(bag);
            char *name = PKCS12_get_friendlyname(bag);
            assert_int_equal(X509_cmp(x, cert), 0);
            assert_non_null(name);
            assert_string_equal(name, "p12 test CA");
            OPENSSL_free(name);
            X509_free(x);
        }
        sk_PKCS12_SAFEBAG_pop_free(bags, PKCS12_SAFEBAG_free);
    }
    sk_PKCS7_pop_free(safes, PKCS7_free);
}

static void test_export_p12_holds_only_the_certificate(void **state)
{
    struct ca *ca = init_and_load(tpath("ca"), CA_KEY_EC_P256, "p12 test CA");
    const char *path = tpath("ca.p12");
    STACK_OF(X509) *extra = NULL;
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    int n_certs, n_keys;
    const X509_ALGOR *mac_alg;
    const ASN1_OBJECT *mac_obj;
    PKCS12 *p12;
    BIO *in;

    assert_int_equal(ca_export(ca, CA_EXPORT_P12, path, err, sizeof(err)), 0);
    in = BIO_new_file(path, "rb");
    p12 = d2i_PKCS12_bio(in, NULL);
    assert_non_null(p12);
    assert_int_equal(PKCS12_verify_mac(p12, "", 0), 1); /* empty password */
    PKCS12_get0_mac(NULL, &mac_alg, NULL, NULL, p12);
    X509_ALGOR_get0(&mac_obj, NULL, NULL, mac_alg);
    assert_int_equal(OBJ_obj2nid(mac_obj), NID_sha1); /* what older importers understand */
    check_p12_bags(p12, ca->cert, &n_certs, &n_keys);
    assert_int_equal(n_certs, 1);
    assert_int_equal(n_keys, 0);
    assert_int_equal(PKCS12_parse(p12, "", &key, &cert, &extra), 1);
    assert_null(key);
    assert_int_equal(sk_X509_num(extra), 1);
    assert_int_equal(X509_cmp(sk_X509_value(extra, 0), ca->cert), 0);
    sk_X509_pop_free(extra, X509_free);
    X509_free(cert);
    PKCS12_free(p12);
    BIO_free(in);
    ca_free(ca);
}

/* ---- the command line ---- */

struct captured {
    int rc;
    char *out;
    char *err;
};

/* Runs ca_cli_main with stdout and stderr sent to files; returns both texts. */
static struct captured run_cli(int argc, char **argv)
{
    const char *out_path = tpath("stdout.txt"), *err_path = tpath("stderr.txt");
    int saved_out = dup(STDOUT_FILENO), saved_err = dup(STDERR_FILENO);
    int fo = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int fe = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    struct captured r;

    fflush(stdout);
    fflush(stderr);
    dup2(fo, STDOUT_FILENO);
    dup2(fe, STDERR_FILENO);
    r.rc = ca_cli_main(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, STDOUT_FILENO);
    dup2(saved_err, STDERR_FILENO);
    close(saved_out);
    close(saved_err);
    close(fo);
    close(fe);
    r.out = slurp(out_path, NULL);
    r.err = slurp(err_path, NULL);
    return r;
}

static void captured_free(struct captured *r)
{
    free(r->out);
    free(r->err);
}

#define RUN(...)                                                                                   \
    ({                                                                                             \
        char *argv_[] = {__VA_ARGS__, NULL};                                                       \
        run_cli((int)(sizeof(argv_) / sizeof(argv_[0])) - 1, argv_);                               \
    })

static void fingerprint(const X509 *x, char *out)
{
    unsigned char md[32];
    unsigned int len;

    assert_true(X509_digest(x, EVP_sha256(), md, &len));
    for (unsigned int i = 0; i < len; i++)
        sprintf(out + 3 * i, i ? ":%02X" : "%02X", md[i]);
}

static void test_cli_init_prints_where_and_fingerprint(void **state)
{
    char dir[PATH_MAX];
    char fp[128];
    struct captured r;
    struct ca *ca;

    strcpy(dir, tpath("cli"));
    r = RUN("ca", "init", "--ca-dir", dir, "--key", "ec-p256", "--name", "CLI");

    assert_int_equal(r.rc, 0);
    ca = ca_load(dir, err, sizeof(err));
    assert_non_null(ca);
    fingerprint(ca->cert, fp);
    assert_non_null(strstr(r.out, dir));
    assert_non_null(strstr(r.out, fp));
    assert_string_equal(r.err, "");
    captured_free(&r);

    /* a second init refuses and says how to force */
    r = RUN("ca", "init", "--ca-dir", dir);
    assert_int_equal(r.rc, 1);
    assert_true(strncmp(r.err, "sluice: ", 8) == 0);
    assert_non_null(strstr(r.err, "--force"));
    assert_ptr_equal(strchr(r.err, '\n'), r.err + strlen(r.err) - 1); /* one line */
    captured_free(&r);

    r = RUN("ca", "init", "--force", "--ca-dir", dir, "--key", "rsa-2048");
    assert_int_equal(r.rc, 0);
    captured_free(&r);
    struct ca *ca2 = ca_load(dir, err, sizeof(err));
    assert_non_null(ca2);
    assert_true(EVP_PKEY_is_a(ca2->key, "RSA"));
    assert_int_not_equal(X509_cmp(ca->cert, ca2->cert), 0);
    ca_free(ca2);
    ca_free(ca);
}

static void test_cli_export(void **state)
{
    char dir[PATH_MAX], out[PATH_MAX], none[PATH_MAX];
    struct captured r;
    struct ca *ca;
    X509 *x;
    BIO *in;

    strcpy(dir, tpath("cli"));
    strcpy(out, tpath("cli.cer"));
    strcpy(none, tpath("none"));
    r = RUN("ca", "init", "--ca-dir", dir);
    ca = ca_load(dir, err, sizeof(err));

    assert_int_equal(r.rc, 0);
    captured_free(&r);
    assert_int_equal(unlink(tpath("cli/ca.key")), 0); /* export must not need the key */

    r = RUN("ca", "export", "--ca-dir", dir, "--format", "der", "--out", out);
    assert_int_equal(r.rc, 0);
    captured_free(&r);
    in = BIO_new_file(out, "rb");
    x = d2i_X509_bio(in, NULL);
    assert_non_null(x);
    assert_int_equal(X509_cmp(x, ca->cert), 0);
    X509_free(x);
    BIO_free(in);

    r = RUN("ca", "export", "--format", "pem", "--ca-dir", dir); /* to stdout */
    assert_int_equal(r.rc, 0);
    in = BIO_new_mem_buf(r.out, -1);
    x = PEM_read_bio_X509(in, NULL, NULL, NULL);
    assert_non_null(x);
    assert_int_equal(X509_cmp(x, ca->cert), 0);
    X509_free(x);
    BIO_free(in);
    captured_free(&r);

    r = RUN("ca", "export", "--ca-dir", none, "--format", "pem");
    assert_int_equal(r.rc, 1);
    assert_true(strncmp(r.err, "sluice: ", 8) == 0);
    assert_non_null(strstr(r.err, "ca.pem"));
    captured_free(&r);
    ca_free(ca);
}

static void expect_usage_error(struct captured r, const char *needle)
{
    assert_int_equal(r.rc, 2);
    assert_true(strncmp(r.err, "sluice: ", 8) == 0);
    if (strstr(r.err, needle) == NULL)
        fail_msg("stderr \"%s\" does not mention \"%s\"", r.err, needle);
    assert_string_equal(r.out, "");
    captured_free(&r);
}

static void test_cli_usage_errors(void **state)
{
    char dir[PATH_MAX];

    strcpy(dir, tpath("cli"));
    expect_usage_error(RUN("ca", "init", "--bogus"), "--bogus");
    expect_usage_error(RUN("ca", "init", "--ca-dir"), "--ca-dir");
    expect_usage_error(RUN("ca", "init", "--ca-dir", dir, "--key", "dsa"), "dsa");
    expect_usage_error(RUN("ca", "init", "--ca-dir", dir, "stray"), "stray");
    expect_usage_error(RUN("ca", "export", "--ca-dir", dir), "--format");
    expect_usage_error(RUN("ca", "export", "--ca-dir", dir, "--format", "jks"), "jks");
    expect_usage_error(RUN("ca", "export", "--force"), "--force"); /* init-only option */
    expect_usage_error(RUN("ca", "frobnicate"), "frobnicate");
    expect_usage_error(RUN("ca"), "init or export");
    assert_false(ca_exists(dir)); /* nothing was created by any of them */
}

static void test_cli_help_lists_options_and_defaults(void **state)
{
    static const char *const want[] = {"--ca-dir", "--key", "--name",         "--force",
                                       "--format", "--out", "ec-p256",        "rsa-2048",
                                       "rsa-3072", "p12",   "standard output"};
    struct captured r = RUN("ca", "--help");

    assert_int_equal(r.rc, 0);
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        assert_non_null(strstr(r.out, want[i]));
    assert_non_null(strstr(r.out, ca_default_dir()));
    captured_free(&r);

    r = RUN("ca", "init", "--help");
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "--force"));
    assert_non_null(strstr(r.out, "default: ec-p256"));
    assert_null(strstr(r.out, "--format"));
    captured_free(&r);

    r = RUN("ca", "export", "-h");
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "--format"));
    assert_non_null(strstr(r.out, "--out"));
    captured_free(&r);
}

static void check_default_dir_as_user(void)
{
    setenv("HOME", "/home/someone", 1);
    assert_string_equal(ca_default_dir(), "/home/someone/.local/share/sluice/ca");
}

static void test_default_dir(void **state)
{
    const char *home = getenv("HOME");
    char *saved = home ? strdup(home) : NULL;
    pid_t pid;
    int status;

    if (geteuid() != 0) {
        check_default_dir_as_user();
    } else {
        assert_string_equal(ca_default_dir(), "/var/lib/sluice/ca");
        /* the user's default, checked in a child that gives up root */
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            setenv("HOME", "/home/someone", 1);
            _exit(seteuid(65534) == 0 && geteuid() == 65534 &&
                          strcmp(ca_default_dir(), "/home/someone/.local/share/sluice/ca") == 0
                      ? 0
                      : 1);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    if (saved != NULL)
        setenv("HOME", saved, 1);
    else
        unsetenv("HOME");
    free(saved);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_init_creates_files_with_private_modes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_init_cert_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_custom_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_each_key_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_refuses_existing_without_force, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_refuses_lone_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_inits_never_share_a_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_refuses_key_readable_by_others, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_missing_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_refuses_mismatched_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_refuses_garbage_and_encrypted_keys, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_load_refuses_non_ca, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_operator_ca_any_key_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_export_pem_and_der_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_export_p12_holds_only_the_certificate, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cli_init_prints_where_and_fingerprint, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cli_export, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli_usage_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli_help_lists_options_and_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_dir, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
