/* mint: forging leaf certificates that mirror a verified upstream certificate, and the
 * bounded LRU cache of forged leaves. One cache per worker: no locking. */
#ifndef SLUICE_MINT_H
#define SLUICE_MINT_H

#include "ca.h"
#include <openssl/evp.h>
#include <openssl/x509.h>

/* A forged leaf and its private key. Reference-counted: the cache holds one reference and
 * every user (a connection waiting to hand it to OpenSSL) takes its own. */
struct mint_leaf {
    X509 *cert;
    EVP_PKEY *key;
    int refs;
};

struct mint_cache;

/* Creates a cache holding at most capacity leaves, forging with the given CA (borrowed: the
 * CA must outlive the cache) and leaf key type. Returns NULL on allocation failure. */
struct mint_cache *mint_cache_new(const struct ca *ca, enum ca_key_type leaf_key, size_t capacity);
void mint_cache_free(struct mint_cache *c);

/* Returns a leaf for the verified upstream certificate `upstream` (borrowed) as requested
 * under `name` (SNI or CONNECT host; a DNS name or an IP literal; may be NULL). On a cache hit
 * no signing happens. Key: SHA-256 of upstream's DER + name.
 * The leaf: subject CN and SANs (DNS, IP) copied from upstream, plus name when not covered;
 * nothing else copied; fresh key; random positive serial; notBefore now-1h; notAfter
 * min(upstream notAfter, now + 397 days); CA:FALSE critical, keyUsage digitalSignature
 * (+keyEncipherment for RSA keys) critical, extendedKeyUsage serverAuth, SKI, AKI = CA's SKI;
 * issuer = CA subject; signed SHA-256.
 * Returns a new reference (release with mint_leaf_release) or NULL on failure. */
struct mint_leaf *mint_leaf_for(struct mint_cache *c, X509 *upstream, const char *name);

/* Returns a leaf that names only `name` (CN and one SAN), used when the upstream could not be
 * verified or reached so the client can be told why over a trusted channel without the
 * origin's identity being vouched for. Cached under its own key. New reference or NULL. */
struct mint_leaf *mint_leaf_for_name(struct mint_cache *c, const char *name);

void mint_leaf_release(struct mint_leaf *leaf);

/* Number of leaves currently cached; for tests and metrics. */
size_t mint_cache_size(const struct mint_cache *c);

#endif
