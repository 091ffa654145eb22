/* ca: the gateway's root CA — key generation, creation on disk, loading with checks, export. */
#include "ca.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CA_CERT_FILE "ca.pem"
#define CA_KEY_FILE "ca.key"
#define CA_VALIDITY_DAYS 3652 /* ten years, leap days included */
#define CA_BACKDATE_SECS 3600 /* tolerate clients whose clock is a little behind */
#define CA_CN_MAX 64          /* ub-common-name (RFC 5280) */
#define CA_SERIAL_RANDOM 16   /* bytes of randomness in a serial */

static const char *const ca_key_names[] = {
    [CA_KEY_EC_P256] = "ec-p256",
    [CA_KEY_RSA_2048] = "rsa-2048",
    [CA_KEY_RSA_3072] = "rsa-3072",
};

int ca_key_type_parse(const char *s, enum ca_key_type *out)
{
    for (size_t i = 0; i < sizeof(ca_key_names) / sizeof(ca_key_names[0]); i++) {
        if (s != NULL && strcmp(s, ca_key_names[i]) == 0) {
            *out = (enum ca_key_type)i;
            return 0;
        }
    }
    return -1;
}

const char *ca_key_type_name(enum ca_key_type t)
{
    if ((size_t)t >= sizeof(ca_key_names) / sizeof(ca_key_names[0]))
        return "unknown";
    return ca_key_names[t];
}

/* Fills err with "what: <last OpenSSL reason>" and empties the OpenSSL error queue. */
static void ca_err_ssl(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;

    snprintf(err, errlen, "%s: %s", what, reason != NULL ? reason : "OpenSSL error");
    ERR_clear_error();
}

EVP_PKEY_CTX *ca_keygen_ctx_new(enum ca_key_type type)
{
    bool ec = type == CA_KEY_EC_P256;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, ec ? "EC" : "RSA", NULL);
    EVP_PKEY_CTX *ret = NULL;

    if (ctx == NULL || EVP_PKEY_keygen_init(ctx) <= 0)
        goto out;
    if (ec && EVP_PKEY_CTX_set_group_name(ctx, "P-256") <= 0)
        goto out;
    if (!ec && EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, type == CA_KEY_RSA_3072 ? 3072 : 2048) <= 0)
        goto out;
    ret = ctx;
    ctx = NULL;
out:
    EVP_PKEY_CTX_free(ctx);
    return ret;
}

EVP_PKEY *ca_key_generate(enum ca_key_type type)
{
    EVP_PKEY_CTX *ctx = ca_keygen_ctx_new(type);
    EVP_PKEY *key = NULL;

    if (ctx != NULL && EVP_PKEY_generate(ctx, &key) <= 0)
        key = NULL;
    EVP_PKEY_CTX_free(ctx);
    return key;
}

int ca_serial_randomize(X509 *cert)
{
    unsigned char buf[1 + CA_SERIAL_RANDOM];

    /* Set the magnitude bytes of the ASN1_INTEGER in place: no BIGNUM round trip. The
     * leading 0x01 keeps the value positive and its length fixed. */
    buf[0] = 0x01;
    if (RAND_bytes(buf + 1, CA_SERIAL_RANDOM) != 1)
        return -1;
    return ASN1_STRING_set(X509_get_serialNumber(cert), buf, sizeof(buf)) == 1 ? 0 : -1;
}

int ca_cert_sign(X509 *cert, EVP_PKEY *key)
{
    const EVP_MD *md = EVP_sha256();
    char name[32];

    /* EdDSA hashes the message itself and OpenSSL insists on no digest for it: such keys
     * name "UNDEF" as their mandatory digest. */
    if (EVP_PKEY_get_default_digest_name(key, name, sizeof(name)) == 2 &&
        strcmp(name, "UNDEF") == 0)
        md = NULL;
    return X509_sign(cert, key, md) > 0 ? 0 : -1;
}

const char *ca_default_dir(void)
{
    static char buf[PATH_MAX];
    const char *home = getenv("HOME");

    if (geteuid() == 0)
        return "/var/lib/sluice/ca";
    if (home == NULL || home[0] == '\0') {
        struct passwd *pw = getpwuid(geteuid());
        home = pw != NULL ? pw->pw_dir : ".";
    }
    snprintf(buf, sizeof(buf), "%s/.local/share/sluice/ca", home);
    return buf;
}

/* Joins dir and file into out; -1 with err filled when it does not fit. */
static int ca_path(char *out, size_t outlen, const char *dir, const char *file, char *err,
                   size_t errlen)
{
    int n = snprintf(out, outlen, "%s/%s", dir, file);

    if (n < 0 || (size_t)n >= outlen) {
        snprintf(err, errlen, "CA directory path is too long: %s", dir);
        return -1;
    }
    return 0;
}

/* True when dir/file exists as anything, even a dangling symlink: not to be clobbered. */
static bool ca_file_present(const char *dir, const char *file)
{
    char path[PATH_MAX];
    struct stat st;
    int n = snprintf(path, sizeof(path), "%s/%s", dir, file);

    return n > 0 && (size_t)n < sizeof(path) && lstat(path, &st) == 0;
}

bool ca_exists(const char *dir)
{
    return ca_file_present(dir, CA_CERT_FILE) || ca_file_present(dir, CA_KEY_FILE);
}

/* mkdir -p dir; components this creates get mode 0700 (the CA key lives below). */
static int ca_dir_make(const char *dir, char *err, size_t errlen)
{
    char path[PATH_MAX];
    size_t len = strlen(dir);

    if (len == 0 || len >= sizeof(path)) {
        snprintf(err, errlen, "invalid CA directory \"%s\"", dir);
        return -1;
    }
    memcpy(path, dir, len + 1);
    for (char *p = path + 1;; p++) {
        char c = *p;
        if (c != '/' && c != '\0')
            continue;
        *p = '\0';
        if (mkdir(path, 0700) == 0) {
            if (chmod(path, 0700) < 0) /* the umask may have taken owner bits */
                goto fail;
        } else if (errno != EEXIST) {
            goto fail;
        }
        *p = c;
        if (c == '\0')
            break;
    }
    return 0;
fail:
    snprintf(err, errlen, "cannot create CA directory %s: %s", path, strerror(errno));
    return -1;
}

static int ca_write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Writes data to a new temporary file next to path, created with O_EXCL and exactly mode,
 * and fsyncs it. tmp (size PATH_MAX) receives its name; the caller renames or unlinks it. */
static int ca_file_stage(const char *path, const char *data, size_t len, mode_t mode, char *tmp,
                         char *err, size_t errlen)
{
    int fd = -1;
    int ret = -1;

    for (int attempt = 0; attempt < 8 && fd < 0; attempt++) {
        unsigned int r = 0;
        if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
            r = (unsigned int)attempt;
        snprintf(tmp, PATH_MAX, "%s.tmp-%ld-%08x", path, (long)getpid(), r);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        tmp[0] = '\0';
        return -1;
    }
    if (fchmod(fd, mode) < 0 || ca_write_all(fd, data, len) < 0 || fsync(fd) < 0) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    ret = 0;
out:
    if (close(fd) < 0 && ret == 0) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        ret = -1;
    }
    return ret;
}

/* The default subject CN, "sluice CA <hostname> <YYYY-MM-DD>", the host name shortened so
 * that the whole fits in a CN. */
static void ca_default_cn(char *out, size_t outlen)
{
    char host[256] = "localhost";
    char date[16];
    time_t now = time(NULL);
    struct tm tm;
    int room;

    if (gethostname(host, sizeof(host)) < 0)
        strcpy(host, "localhost");
    host[sizeof(host) - 1] = '\0';
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%Y-%m-%d", &tm);
    room = CA_CN_MAX - (int)(strlen("sluice CA  ") + strlen(date));
    snprintf(out, outlen, "sluice CA %.*s %s", room, host, date);
}

static int ca_cert_add_exts(X509 *x, EVP_PKEY *key)
{
    static const struct {
        int nid;
        const char *value;
    } exts[] = {
        {NID_basic_constraints, "critical,CA:TRUE"},
        {NID_key_usage, "critical,keyCertSign,cRLSign"},
        {NID_subject_key_identifier, "hash"},
        {NID_authority_key_identifier, "keyid:always"},
    };
    X509V3_CTX ctx;

    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    if (!X509V3_set_issuer_pkey(&ctx, key))
        return -1;
    for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
        X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, &ctx, exts[i].nid, exts[i].value);
        int ok = e != NULL && X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
        if (!ok)
            return -1;
    }
    return 0;
}

/* Builds the self-signed root for key (borrowed). Returns a new certificate or NULL. */
static X509 *ca_cert_create(EVP_PKEY *key, const char *cn)
{
    X509 *x = X509_new();
    X509 *ret = NULL;
    X509_NAME *name;
    time_t now = time(NULL);

    if (x == NULL)
        return NULL;
    name = X509_get_subject_name(x);
    if (!X509_set_version(x, X509_VERSION_3) || ca_serial_randomize(x) < 0 ||
        !X509_time_adj_ex(X509_getm_notBefore(x), 0, -CA_BACKDATE_SECS, &now) ||
        !X509_time_adj_ex(X509_getm_notAfter(x), CA_VALIDITY_DAYS, 0, &now) ||
        !X509_set_pubkey(x, key))
        goto out;
    if (!X509_NAME_add_entry_by_NID(name, NID_organizationName, MBSTRING_UTF8,
                                    (const unsigned char *)"sluice", -1, -1, 0) ||
        !X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8, (const unsigned char *)cn,
                                    -1, -1, 0) ||
        !X509_set_issuer_name(x, name))
        goto out;
    if (ca_cert_add_exts(x, key) < 0 || ca_cert_sign(x, key) < 0)
        goto out;
    ret = x;
    x = NULL;
out:
    X509_free(x);
    return ret;
}

/* PEM encodings of a new CA: the key as unencrypted PKCS#8 in memory that is wiped on free. */
static int ca_pem_encode(X509 *cert, EVP_PKEY *key, BIO **cert_pem, BIO **key_pem)
{
    *cert_pem = BIO_new(BIO_s_mem());
    *key_pem = BIO_new(BIO_s_secmem());
    if (*cert_pem == NULL || *key_pem == NULL || !PEM_write_bio_X509(*cert_pem, cert) ||
        !PEM_write_bio_PKCS8PrivateKey(*key_pem, key, NULL, NULL, 0, NULL, NULL))
        return -1;
    return 0;
}

/* Stages both files, then renames them into place: readers never see a partial file. */
static int ca_files_write(const char *dir, BIO *cert_pem, BIO *key_pem, char *err, size_t errlen)
{
    char cert_path[PATH_MAX], key_path[PATH_MAX];
    char cert_tmp[PATH_MAX] = "", key_tmp[PATH_MAX] = "";
    char *data;
    long len;
    int ret = -1;

    if (ca_path(cert_path, sizeof(cert_path), dir, CA_CERT_FILE, err, errlen) < 0 ||
        ca_path(key_path, sizeof(key_path), dir, CA_KEY_FILE, err, errlen) < 0)
        return -1;
    len = BIO_get_mem_data(key_pem, &data);
    if (ca_file_stage(key_path, data, (size_t)len, 0600, key_tmp, err, errlen) < 0)
        goto out;
    len = BIO_get_mem_data(cert_pem, &data);
    if (ca_file_stage(cert_path, data, (size_t)len, 0644, cert_tmp, err, errlen) < 0)
        goto out;
    if (rename(key_tmp, key_path) < 0 || rename(cert_tmp, cert_path) < 0) {
        snprintf(err, errlen, "cannot rename into %s: %s", dir, strerror(errno));
        goto out;
    }
    ret = 0;
out:
    if (ret < 0 && key_tmp[0] != '\0')
        unlink(key_tmp);
    if (ret < 0 && cert_tmp[0] != '\0')
        unlink(cert_tmp);
    return ret;
}

/* fsync the directory so the renames survive a crash; best effort. */
static void ca_dir_sync(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

static int ca_cn_check(const char *cn, char *err, size_t errlen)
{
    size_t len = strlen(cn);

    if (len == 0 || len > CA_CN_MAX) {
        snprintf(err, errlen, "CA name must be 1 to %d characters, got %zu (--name)", CA_CN_MAX,
                 len);
        return -1;
    }
    return 0;
}

int ca_init(const char *dir, enum ca_key_type type, const char *cn, bool force, char *err,
            size_t errlen)
{
    char default_cn[CA_CN_MAX + 1];
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    BIO *cert_pem = NULL, *key_pem = NULL;
    int ret = -1;

    ERR_clear_error();
    if (cn == NULL) {
        ca_default_cn(default_cn, sizeof(default_cn));
        cn = default_cn;
    }
    if (ca_cn_check(cn, err, errlen) < 0)
        goto out;
    if (!force && ca_exists(dir)) {
        snprintf(err, errlen,
                 "a CA already exists in %s (ca.pem or ca.key); not overwriting it. To replace "
                 "it (clients must then trust the new one), run: sluice ca init --force "
                 "--ca-dir %s",
                 dir, dir);
        goto out;
    }
    if (ca_dir_make(dir, err, errlen) < 0)
        goto out;
    if ((key = ca_key_generate(type)) == NULL || (cert = ca_cert_create(key, cn)) == NULL ||
        ca_pem_encode(cert, key, &cert_pem, &key_pem) < 0) {
        ca_err_ssl(err, errlen, "cannot create the CA");
        goto out;
    }
    if (ca_files_write(dir, cert_pem, key_pem, err, errlen) < 0)
        goto out;
    ca_dir_sync(dir);
    ret = 0;
out:
    BIO_free(key_pem);
    BIO_free(cert_pem);
    X509_free(cert);
    EVP_PKEY_free(key);
    return ret;
}

/* Fills ca->ski from the SKI extension, or as RFC 5280 method 1 (SHA-1 of the public key)
 * when the certificate has none. */
static int ca_ski_fill(struct ca *ca)
{
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(ca->cert);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;

    if (ski != NULL && ski->length > 0 && (size_t)ski->length <= sizeof(ca->ski)) {
        memcpy(ca->ski, ski->data, (size_t)ski->length);
        ca->ski_len = (size_t)ski->length;
        return 0;
    }
    if (!X509_pubkey_digest(ca->cert, EVP_sha1(), md, &len))
        return -1;
    memcpy(ca->ski, md, len);
    ca->ski_len = len;
    return 0;
}

/* Explains a failed open() of a CA file. */
static void ca_err_open(char *err, size_t errlen, const char *what, const char *path,
                        const char *dir)
{
    if (errno == ENOENT)
        snprintf(err, errlen, "%s %s does not exist; create a CA with: sluice ca init --ca-dir %s",
                 what, path, dir);
    else
        snprintf(err, errlen, "cannot open %s %s: %s", what, path, strerror(errno));
}

static X509 *ca_cert_read(const char *path, const char *dir, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    X509 *cert;

    if (f == NULL) {
        ca_err_open(err, errlen, "CA certificate", path, dir);
        return NULL;
    }
    cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (cert == NULL) {
        char what[PATH_MAX + 64];
        snprintf(what, sizeof(what), "cannot read CA certificate %s (expected PEM)", path);
        ca_err_ssl(err, errlen, what);
    }
    return cert;
}

struct ca *ca_load_cert(const char *dir, char *err, size_t errlen)
{
    char path[PATH_MAX];
    struct ca *ca = NULL, *ret = NULL;

    ERR_clear_error();
    if (ca_path(path, sizeof(path), dir, CA_CERT_FILE, err, errlen) < 0)
        goto out;
    if ((ca = calloc(1, sizeof(*ca))) == NULL) {
        snprintf(err, errlen, "out of memory loading %s", path);
        goto out;
    }
    if ((ca->cert = ca_cert_read(path, dir, err, errlen)) == NULL)
        goto out;
    if (X509_check_ca(ca->cert) == 0) {
        snprintf(err, errlen,
                 "CA certificate %s is not a CA certificate (needs basicConstraints CA:TRUE "
                 "and keyCertSign); create one with: sluice ca init --ca-dir %s",
                 path, dir);
        goto out;
    }
    if (ca_ski_fill(ca) < 0) {
        ca_err_ssl(err, errlen, "cannot compute the CA key identifier");
        goto out;
    }
    ret = ca;
    ca = NULL;
out:
    ca_free(ca);
    return ret;
}

/* PEM password callback: never prompt (sluice runs unattended); record that it was asked. */
static int ca_key_no_password(char *buf, int size, int rwflag, void *u)
{
    *(bool *)u = true;
    return -1;
}

static const char *ca_mode_problem(mode_t mode)
{
    if (mode & 044)
        return "readable";
    return (mode & 022) ? "writable" : "executable";
}

/* Opens the key at path and checks it is a regular file only its owner can use. */
static int ca_key_open(const char *path, const char *dir, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;

    if (fd < 0) {
        ca_err_open(err, errlen, "CA key", path, dir);
        return -1;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "CA key %s is not a regular file", path);
        goto fail;
    }
    if (st.st_mode & 077) {
        snprintf(err, errlen, "CA key %s is %s by group or others (mode %04o); run: chmod 600 %s",
                 path, ca_mode_problem(st.st_mode), (unsigned)(st.st_mode & 07777), path);
        goto fail;
    }
    return fd;
fail:
    close(fd);
    return -1;
}

static EVP_PKEY *ca_key_read(const char *path, const char *dir, char *err, size_t errlen)
{
    int fd = ca_key_open(path, dir, err, errlen);
    bool asked_password = false;
    EVP_PKEY *key = NULL;
    BIO *in;

    if (fd < 0)
        return NULL;
    if ((in = BIO_new_fd(fd, BIO_CLOSE)) == NULL) {
        close(fd);
        ca_err_ssl(err, errlen, "cannot read the CA key");
        return NULL;
    }
    key = PEM_read_bio_PrivateKey(in, NULL, ca_key_no_password, &asked_password);
    BIO_free(in);
    if (key == NULL && asked_password) {
        snprintf(err, errlen,
                 "CA key %s is encrypted; sluice needs it unencrypted (openssl pkey -in %s "
                 "-out NEWFILE, then move NEWFILE there with mode 0600)",
                 path, path);
        ERR_clear_error();
    } else if (key == NULL) {
        char what[PATH_MAX + 64];
        snprintf(what, sizeof(what), "cannot read CA key %s (expected a PEM private key)", path);
        ca_err_ssl(err, errlen, what);
    }
    return key;
}

struct ca *ca_load(const char *dir, char *err, size_t errlen)
{
    char path[PATH_MAX];
    struct ca *ca = ca_load_cert(dir, err, errlen);
    struct ca *ret = NULL;

    if (ca == NULL)
        return NULL;
    if (ca_path(path, sizeof(path), dir, CA_KEY_FILE, err, errlen) < 0)
        goto out;
    if ((ca->key = ca_key_read(path, dir, err, errlen)) == NULL)
        goto out;
    if (X509_check_private_key(ca->cert, ca->key) != 1) {
        snprintf(err, errlen,
                 "CA key %s does not match the certificate %s/" CA_CERT_FILE
                 "; put the matching pair there, or make a new CA with: sluice ca init "
                 "--force --ca-dir %s",
                 path, dir, dir);
        ERR_clear_error();
        goto out;
    }
    ret = ca;
    ca = NULL;
out:
    ca_free(ca);
    return ret;
}

void ca_free(struct ca *ca)
{
    if (ca == NULL)
        return;
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    free(ca);
}

/* PKCS#12 with one unencrypted certificate bag, no key, empty password, its friendlyName the
 * certificate's CN. The MAC uses SHA-1, not OpenSSL 3's SHA-256 default, which older macOS
 * and Windows importers reject; it only guards a public certificate. */
static int ca_p12_write(X509 *cert, BIO *out)
{
    char name[CA_CN_MAX + 1] = "sluice CA";
    PKCS12 *p12;
    int ret = -1;

    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, name, sizeof(name));
    p12 = PKCS12_create("", name, NULL, cert, NULL, 0, -1, 0, -1, 0);
    if (p12 != NULL && PKCS12_set_mac(p12, "", 0, NULL, 0, PKCS12_DEFAULT_ITER, EVP_sha1()) &&
        i2d_PKCS12_bio(out, p12) == 1)
        ret = 0;
    PKCS12_free(p12);
    return ret;
}

static int ca_cert_write(X509 *cert, enum ca_export_format fmt, BIO *out)
{
    switch (fmt) {
    case CA_EXPORT_PEM:
        return PEM_write_bio_X509(out, cert) == 1 ? 0 : -1;
    case CA_EXPORT_DER:
        return i2d_X509_bio(out, cert) == 1 ? 0 : -1;
    case CA_EXPORT_P12:
        return ca_p12_write(cert, out);
    }
    return -1;
}

int ca_export(const struct ca *ca, enum ca_export_format fmt, const char *path, char *err,
              size_t errlen)
{
    bool to_stdout = path == NULL || strcmp(path, "-") == 0;
    const char *where = to_stdout ? "standard output" : path;
    FILE *f = to_stdout ? stdout : fopen(path, "we");
    BIO *out = NULL;
    int ret = -1;

    ERR_clear_error();
    if (f == NULL) {
        snprintf(err, errlen, "cannot open %s for writing: %s", path, strerror(errno));
        return -1;
    }
    if ((out = BIO_new_fp(f, BIO_NOCLOSE)) == NULL || ca_cert_write(ca->cert, fmt, out) < 0 ||
        BIO_flush(out) != 1) {
        ca_err_ssl(err, errlen, "cannot encode the CA certificate");
        goto out;
    }
    if (fflush(f) != 0 || ferror(f)) {
        snprintf(err, errlen, "cannot write %s: %s", where, strerror(errno));
        goto out;
    }
    ret = 0;
out:
    BIO_free(out);
    if (!to_stdout && fclose(f) != 0 && ret == 0) {
        snprintf(err, errlen, "cannot write %s: %s", where, strerror(errno));
        ret = -1;
    }
    return ret;
}
