/* gateway: start-up, the workers, signals, and an orderly shutdown. */
#include "gateway.h"

#include <errno.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "ca.h"
#include "conn.h"
#include "connlog.h"
#include "listener.h"
#include "log.h"
#include "pinning.h"
#include "snapshot.h"
#include "tls.h"
#include "worker.h"

static void gateway_warn_keylog(const struct gateway *gw)
{
    if (gw->keylog_fd >= 0)
        log_msg(LOG_WARN, "keylog is ON: the TLS secrets of every connection are written to %s; "
                "anyone who reads that file can decrypt captured traffic",
                gw->cfg->keylog);
}

static gateway_reload_cb gateway_reloader;
static void *gateway_reloader_arg;

void gateway_set_reloader(gateway_reload_cb cb, void *arg)
{
    gateway_reloader = cb;
    gateway_reloader_arg = arg;
}

/* Each intercepted connection holds two descriptors: use all the process may have. */
static void gateway_raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Loads the CA, creating one on first start. */
static struct ca *gateway_load_ca(const struct config *cfg)
{
    char err[512];
    if (!ca_exists(cfg->ca_dir)) {
        if (ca_init(cfg->ca_dir, CA_KEY_EC_P256, NULL, false, err, sizeof(err)) != 0) {
            log_msg(LOG_ERROR, "%s", err);
            return NULL;
        }
        log_msg(LOG_INFO,
                "created a new CA in %s: clients must trust %s/ca.pem "
                "(sluice ca export --ca-dir %s --format pem|der|p12)",
                cfg->ca_dir, cfg->ca_dir, cfg->ca_dir);
    }
    struct ca *ca = ca_load(cfg->ca_dir, err, sizeof(err));
    if (!ca)
        log_msg(LOG_ERROR, "%s", err);
    return ca;
}

/* The key log holds every session's secrets: owner-only, and said loudly. */
static int gateway_open_keylog(struct gateway *gw, const char *path, char *err, size_t errlen)
{
    gw->keylog_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (gw->keylog_fd < 0) {
        snprintf(err, errlen, "cannot open key log %s: %s", path, strerror(errno));
        return -1;
    }
    tls_keylog_to(gw->client_ctx, gw->keylog_fd);
    tls_keylog_to(gw->upstream_ctx, gw->keylog_fd);
    gateway_warn_keylog(gw);
    return 0;
}

/* The capture file holds decoded bodies: only its owner may read it, like the key log. */
static int gateway_open_capture(struct gateway *gw, const char *path, char *err, size_t errlen)
{
    gw->capture_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (gw->capture_fd < 0) {
        snprintf(err, errlen, "cannot open capture file %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int gateway_prepare(struct gateway *gw, struct config *cfg)
{
    char err[512];
    if (!(gw->snap = snapshot_new(cfg, 1))) {
        log_msg(LOG_ERROR, "out of memory");
        return -1;
    }
    cfg = &gw->snap->cfg;
    gw->cfg = cfg;
    gw->conn_log_fd = -1;
    gw->request_log_fd = -1;
    gw->keylog_fd = -1;
    gw->capture_fd = -1;
    gw->n_workers = cfg->workers;
    if (!(gw->ca = gateway_load_ca(cfg)))
        return -1;
    if (!(gw->client_ctx = conn_client_ctx_new()) || !(gw->pinning = pinning_new(4096)))
        return -1;
    if (!(gw->upstream_ctx =
              tls_upstream_ctx_new(cfg->upstream_ca, conn_on_upstream_session, err, sizeof(err))))
        goto fail;
    if (cfg->conn_log && (gw->conn_log_fd = connlog_open(cfg->conn_log, err, sizeof(err))) < 0)
        goto fail;
    if (cfg->request_log &&
        (gw->request_log_fd = connlog_open(cfg->request_log, err, sizeof(err))) < 0)
        goto fail;
    if (cfg->keylog && gateway_open_keylog(gw, cfg->keylog, err, sizeof(err)) != 0)
        goto fail;
    if (cfg->capture_file && gateway_open_capture(gw, cfg->capture_file, err, sizeof(err)) != 0)
        goto fail;
    if (!(gw->sockets = listener_open_all(cfg, gw->n_workers, &gw->n_sockets, err, sizeof(err))))
        goto fail;
    return 0;
fail:
    log_msg(LOG_ERROR, "%s", err);
    return -1;
}

static void gateway_release(struct gateway *gw)
{
    listener_close_all(gw->sockets, gw->n_sockets);
    if (gw->conn_log_fd >= 0)
        close(gw->conn_log_fd);
    if (gw->request_log_fd >= 0)
        close(gw->request_log_fd);
    if (gw->keylog_fd >= 0)
        close(gw->keylog_fd);
    if (gw->capture_fd >= 0)
        close(gw->capture_fd);
    SSL_CTX_free(gw->client_ctx);
    SSL_CTX_free(gw->upstream_ctx);
    ca_free(gw->ca);
    pinning_free(gw->pinning);
    free(gw->workers);
    snapshot_unref(gw->snap);
}

static int gateway_start_workers(struct gateway *gw)
{
    if (!(gw->workers = calloc((size_t)gw->n_workers, sizeof(*gw->workers))))
        return -1;
    for (int i = 0; i < gw->n_workers; i++)
        if (!(gw->workers[i] = worker_new(gw, i)))
            goto fail;
    for (int i = 0; i < gw->n_workers; i++) {
        if (worker_start(gw->workers[i]) != 0) {
            for (int k = 0; k < i; k++) {
                worker_request_stop(gw->workers[k]);
                worker_join_free(gw->workers[k]);
                gw->workers[k] = NULL;
            }
            goto fail;
        }
    }
    return 0;
fail:
    for (int i = 0; i < gw->n_workers; i++) {
        worker_free(gw->workers[i]);
        gw->workers[i] = NULL;
    }
    log_msg(LOG_ERROR, "cannot start %d workers", gw->n_workers);
    return -1;
}

static void gateway_log_ready(const struct gateway *gw)
{
    const struct config *cfg = gw->cfg;
    char mode[300];
    if (cfg->mode == CONFIG_MODE_FIXED)
        snprintf(mode, sizeof(mode), "fixed mode to %s:%u", cfg->fixed_host, cfg->fixed_port);
    else
        snprintf(mode, sizeof(mode), "%s mode", config_mode_name(cfg->mode));
    for (size_t i = 0; i < cfg->n_listen; i++)
        log_msg(LOG_INFO, "listening on %s (%s), %d workers", cfg->listen[i].text, mode,
                gw->n_workers);
}

static bool gateway_str_differs(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

/* Names the start-up-only settings a reload tried to change. */
static void gateway_warn_fixed_settings(const struct config *old, const struct config *neu)
{
    bool listen = old->n_listen != neu->n_listen;
    for (size_t i = 0; !listen && i < old->n_listen; i++)
        listen = strcmp(old->listen[i].text, neu->listen[i].text) != 0;
    const char *changed[12];
    size_t n = 0;
    if (listen)
        changed[n++] = "listen";
    if (old->workers != neu->workers)
        changed[n++] = "workers";
    if (gateway_str_differs(old->ca_dir, neu->ca_dir))
        changed[n++] = "ca_dir";
    if (gateway_str_differs(old->upstream_ca, neu->upstream_ca))
        changed[n++] = "upstream_ca";
    if (gateway_str_differs(old->conn_log, neu->conn_log))
        changed[n++] = "conn_log";
    if (gateway_str_differs(old->request_log, neu->request_log))
        changed[n++] = "request_log";
    if (gateway_str_differs(old->keylog, neu->keylog))
        changed[n++] = "keylog";
    if (gateway_str_differs(old->capture_file, neu->capture_file))
        changed[n++] = "capture_file";
    if (old->leaf_key != neu->leaf_key)
        changed[n++] = "leaf_key";
    if (old->cert_cache_size != neu->cert_cache_size)
        changed[n++] = "cert_cache_size";
    for (size_t i = 0; i < n; i++)
        log_msg(LOG_WARN, "reload: %s changed, but it takes effect only after a restart",
                changed[i]);
}

/* SIGHUP: a new snapshot for new connections, or the old one stays with the error logged. */
static void gateway_reload(struct gateway *gw, unsigned *generation)
{
    char err[1024];
    struct config cfg;
    if (!gateway_reloader) {
        log_msg(LOG_WARN, "SIGHUP: no configuration to reload");
        return;
    }
    memset(&cfg, 0, sizeof(cfg));
    if (gateway_reloader(&cfg, err, sizeof(err), gateway_reloader_arg) != 0) {
        log_msg(LOG_ERROR, "reload refused, the running configuration stays in force: %s", err);
        config_free(&cfg);
        return;
    }
    gateway_warn_fixed_settings(gw->cfg, &cfg);
    struct snapshot *snap = snapshot_new(&cfg, ++*generation);
    if (!snap) {
        log_msg(LOG_ERROR, "reload refused: out of memory");
        config_free(&cfg);
        return;
    }
    log_set_level((enum log_level)snap->cfg.log_level);
    gateway_warn_keylog(gw);
    for (int i = 0; i < gw->n_workers; i++)
        worker_post_snapshot(gw->workers[i], snap);
    log_msg(LOG_INFO, "reloaded the configuration%s%s (generation %u)",
            snap->cfg.source ? " from " : "", snap->cfg.source ? snap->cfg.source : "",
            snap->generation);
    snapshot_unref(snap);
}

/* Waits for SIGTERM or SIGINT (blocked in every thread and taken here with sigwait);
 * SIGHUP reloads. */
static void gateway_wait_for_stop(struct gateway *gw)
{
    unsigned generation = 1;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            gateway_reload(gw, &generation);
            continue;
        }
        log_msg(LOG_INFO, "%s: no longer accepting; letting open connections finish",
                sig == SIGTERM ? "SIGTERM" : "SIGINT");
        return;
    }
}

int gateway_run(struct config *cfg)
{
    struct gateway gw = {0};
    int rc = 1;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by the workers */
    signal(SIGPIPE, SIG_IGN);
    gateway_raise_fd_limit();
    evthread_use_pthreads();
    log_set_level((enum log_level)cfg->log_level);
    if (gateway_prepare(&gw, cfg) != 0 || gateway_start_workers(&gw) != 0)
        goto out;
    gateway_log_ready(&gw);
    gateway_wait_for_stop(&gw);
    for (int i = 0; i < gw.n_workers; i++)
        worker_request_stop(gw.workers[i]);
    for (int i = 0; i < gw.n_workers; i++)
        worker_join_free(gw.workers[i]);
    log_msg(LOG_INFO, "stopped");
    rc = 0;
out:
    gateway_release(&gw);
    return rc;
}
