/* conn_record: the connection's JSON record, written when it closes (docs/LOGS.md). */
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "addr.h"
#include "conn_int.h"
#include "h2.h"
#include "gateway.h"
#include "json.h"
#include "log.h"
#include "worker.h"

static void json_tls(struct json *j, const char *key, SSL *ssl, bool done)
{
    json_key(j, key);
    if (!ssl || !done) {
        json_null(j);
        return;
    }
    json_begin(j);
    json_kv_str(j, "version", SSL_get_version(ssl));
    json_kv_str(j, "cipher", SSL_get_cipher_name(ssl));
    json_key(j, "resumed");
    json_bool(j, SSL_session_reused(ssl));
    json_end(j);
}

static void json_x509_name(struct json *j, const char *key, const X509_NAME *name)
{
    char buf[512] = "";
    BIO *b = BIO_new(BIO_s_mem());
    if (b && X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        int n = BIO_read(b, buf, sizeof(buf) - 1);
        buf[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
    json_kv_str(j, key, buf);
}

static void json_cert(struct json *j, X509 *cert)
{
    json_key(j, "upstream_cert");
    if (!cert) {
        json_null(j);
        return;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char hex[2 * EVP_MAX_MD_SIZE + 1] = "", when[40] = "";
    X509_digest(cert, EVP_sha256(), md, &mdlen);
    for (unsigned int i = 0; i < mdlen; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm))
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_begin(j);
    json_x509_name(j, "subject", X509_get_subject_name(cert));
    json_x509_name(j, "issuer", X509_get_issuer_name(cert));
    json_kv_str(j, "sha256", hex);
    json_kv_str(j, "not_after", when);
    json_end(j);
}

static void json_verify(struct json *j, const struct conn *c)
{
    json_key(j, "verify");
    if (!c->ussl) {
        json_null(j);
        return;
    }
    bool ok = c->vr.error == X509_V_OK && c->vr.leaf && c->upstream_tls_done;
    json_begin(j);
    json_key(j, "ok");
    json_bool(j, ok);
    json_key(j, "error");
    if (c->vr.error != X509_V_OK)
        json_str(j, X509_verify_cert_error_string(c->vr.error));
    else if (!ok)
        json_str(j, c->err_reason[0] ? c->err_reason : "handshake incomplete");
    else
        json_null(j);
    json_end(j);
}

void conn_log_record(struct conn *c)
{
    int fd = c->w->gw->conn_log_fd;
    if (fd < 0)
        return;
    char line[4096], ts[40], addr[ADDR_TEXT_MAX], target[300];
    struct json j;
    struct timeval now, took;
    gettimeofday(&now, NULL);
    timersub(&now, &c->started, &took);
    json_init(&j, line, sizeof(line) - 1);
    json_begin(&j);
    json_kv_str(&j, "ts", log_time_rfc3339(ts, sizeof(ts)));
    json_kv_uint(&j, "id", c->id);
    json_kv_str(&j, "client", addr_format((struct sockaddr *)&c->client, addr, sizeof(addr)));
    json_key(&j, "dst");
    if (c->have_dst) {
        json_str(&j, addr_format((struct sockaddr *)&c->dst, addr, sizeof(addr)));
    } else if (c->target) {
        snprintf(target, sizeof(target), strchr(c->target, ':') ? "[%s]:%u" : "%s:%u", c->target,
                 c->port);
        json_str(&j, target);
    } else {
        json_null(&j);
    }
    json_kv_str(&j, "sni", c->sni);
    json_kv_str(&j, "mode", config_mode_name(conn_cfg(c)->mode));
    json_kv_str(&j, "action", connlog_action_name(c->action));
    json_kv_str(&j, "rule", c->rule);
    const unsigned char *alpn = NULL;
    unsigned int alpn_len = 0;
    if (c->client_tls_done)
        SSL_get0_alpn_selected(c->cssl, &alpn, &alpn_len);
    json_key(&j, "alpn");
    if (alpn_len)
        json_strn(&j, (const char *)alpn, alpn_len);
    else
        json_null(&j);
    json_tls(&j, "client_tls", c->cssl, c->client_tls_done);
    json_tls(&j, "upstream_tls", c->ussl, c->upstream_tls_done);
    json_cert(&j, c->vr.leaf);
    json_verify(&j, c);
    if (c->h2) {
        json_key(&j, "h2");
        json_begin(&j);
        json_kv_uint(&j, "mem_peak", h2_bridge_memory_peak(c->h2));
        json_end(&j);
    }
    json_kv_uint(&j, "bytes_up", c->relay.dir[0].bytes);
    json_kv_uint(&j, "bytes_down", c->relay.dir[1].bytes);
    json_kv_uint(&j, "duration_ms", (uint64_t)took.tv_sec * 1000 + (uint64_t)took.tv_usec / 1000);
    if (c->err_stage) {
        json_key(&j, "error");
        json_begin(&j);
        json_kv_str(&j, "stage", c->err_stage);
        json_kv_str(&j, "reason", c->err_reason);
        json_end(&j);
    }
    json_end(&j);
    if (j.overflow)
        return;
    line[j.len] = '\n';
    connlog_write(fd, line, j.len + 1);
}
