/* ca: the gateway's root CA — creation, loading with permission checks, export. */
#ifndef SLUICE_CA_H
#define SLUICE_CA_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>

/* Key types for `sluice ca init --key` and for forged leaves. */
enum ca_key_type { CA_KEY_EC_P256 = 0, CA_KEY_RSA_2048, CA_KEY_RSA_3072 };

enum ca_export_format { CA_EXPORT_PEM = 0, CA_EXPORT_DER, CA_EXPORT_P12 };

/* A loaded CA: certificate and private key. Immutable after load, shared read-only by all
 * workers (OpenSSL's X509/EVP_PKEY are safe for concurrent read use). */
struct ca {
    X509 *cert;
    EVP_PKEY *key;
    unsigned char ski[64]; /* subject key identifier of cert, copied into forged leaves' AKI */
    size_t ski_len;
};

/* Errors: every function taking err/errlen fills it with one line the operator can act on
 * (file, what is wrong, how to fix), without the "sluice: " prefix the caller prints. */

/* Parses "ec-p256" | "rsa-2048" | "rsa-3072". Returns 0 and sets *out, or -1. */
int ca_key_type_parse(const char *s, enum ca_key_type *out);
const char *ca_key_type_name(enum ca_key_type t);

/* Generates a fresh private key of the given type. Returns a new key (caller owns) or NULL. */
EVP_PKEY *ca_key_generate(enum ca_key_type type);

/* Returns a key-generation context for type, ready for EVP_PKEY_generate and reusable for
 * many keys (mint keeps one per worker for RSA leaves). Caller owns (EVP_PKEY_CTX_free); NULL
 * on failure. */
EVP_PKEY_CTX *ca_keygen_ctx_new(enum ca_key_type type);

/* Sets a random positive serial on cert (borrowed): 128 random bits below a leading 1 bit,
 * so it is never short and never negative. Returns 0 or -1. */
int ca_serial_randomize(X509 *cert);

/* Signs cert (borrowed) with key (borrowed): SHA-256 for RSA and EC keys, the key's own
 * scheme for EdDSA keys, which take no digest. Returns 0 or -1 (OpenSSL error queue set). */
int ca_cert_sign(X509 *cert, EVP_PKEY *key);

/* The default CA directory: /var/lib/sluice/ca when running as root, else
 * $HOME/.local/share/sluice/ca. Returns a static buffer: call from one thread at start-up. */
const char *ca_default_dir(void);

/* Creates a new self-signed root in dir (created with mode 0700 if missing): ca.pem and ca.key
 * (mode 0600, written to a temporary file then renamed). Refuses (-1, message in err) when
 * dir already holds ca.pem or ca.key and force is false. cn may be NULL for the default
 * ("sluice CA <hostname> <date>"). Returns 0 on success. */
int ca_init(const char *dir, enum ca_key_type type, const char *cn, bool force, char *err,
            size_t errlen);

/* True when dir holds ca.pem or ca.key. */
bool ca_exists(const char *dir);

/* Loads dir/ca.pem and dir/ca.key. Fails with a message the operator can act on when a file
 * is missing or unreadable, when ca.key is readable by group or others (says to chmod 600),
 * when the key does not match the certificate, or when the certificate is not a CA.
 * Returns a new struct ca (caller frees with ca_free) or NULL with err filled. */
struct ca *ca_load(const char *dir, char *err, size_t errlen);

/* Loads only dir/ca.pem, for commands that must not need the key (export): the same checks
 * on the certificate as ca_load, ski filled, key NULL. New struct ca (ca_free) or NULL. */
struct ca *ca_load_cert(const char *dir, char *err, size_t errlen);

/* Frees ca, its certificate and key. NULL is a no-op. */
void ca_free(struct ca *ca);

/* Writes the CA certificate (never the key) in the given format to path, or to stdout when
 * path is NULL or "-". P12 holds only the certificate, no key, no password. Returns 0/-1. */
int ca_export(const struct ca *ca, enum ca_export_format fmt, const char *path, char *err,
              size_t errlen);

/* `sluice ca ...` subcommand: argv[0] is "ca". Returns the process exit code. */
int ca_cli_main(int argc, char **argv);

#endif
