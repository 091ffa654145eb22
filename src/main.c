/* main: the command line — subcommands, options mapped onto config keys, start-up. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca.h"
#include "config.h"
#include "gateway.h"
#include "policy_cli.h"

/* One `sluice run` option: its flag, the config key it sets, and its help text. */
struct run_option {
    const char *flag;
    const char *key;      /* config key; NULL for --config / --help */
    const char *arg;      /* argument name shown in --help */
    const char *help;
};

static const struct run_option run_options[] = {
    {"config", NULL, "FILE", "YAML configuration file; command-line options win over it"},
    {"listen", "listen", "ADDR:PORT", "address to accept on; repeatable, IPv4 or [IPv6]"},
    {"mode", "mode", "MODE", "explicit | transparent | fixed:HOST:PORT"},
    {"ca-dir", "ca_dir", "DIR", "CA directory (ca.pem, ca.key); a CA is created on first start"},
    {"upstream-ca", "upstream_ca", "FILE", "trust these roots (PEM) for upstreams instead of the system store"},
    {"conn-log", "conn_log", "FILE|-", "connection log, one JSON object per line ('-': stdout)"},
    {"request-log", "request_log", "FILE|-", "request log (HTTP/1.1 and HTTP/2), one JSON object per request"},
    {"request-log-drop-query", "request_log_drop_query", "yes|no", "log request paths without their query string"},
    {"request-log-headers", "request_log_headers", "yes|no", "log request and response headers (sensitive values redacted)"},
    {"redact-header", "request_log_redact", "NAME[,NAME]", "also write this header's value as [redacted]; repeatable"},
    {"keylog", "keylog", "FILE", "write TLS secrets of both legs (NSS key log, for Wireshark); off by default"},
    {"workers", "workers", "N", "event loops (threads), one per core"},
    {"connect-timeout", "connect_timeout", "DURATION", "DNS and TCP connect to the upstream"},
    {"handshake-timeout", "handshake_timeout", "DURATION", "proxy request, ClientHello, each TLS handshake"},
    {"idle-timeout", "idle_timeout", "DURATION", "no byte either way while relaying"},
    {"shutdown-timeout", "shutdown_timeout", "DURATION", "SIGTERM waits this long for open connections"},
    {"first-byte-timeout", "first_byte_timeout", "DURATION", "a silent client is relayed as TCP after this (server speaks first)"},
    {"leaf-key", "leaf_key", "TYPE", "key type of forged leaves: ec-p256 | rsa-2048 | rsa-3072"},
    {"cert-cache-size", "cert_cache_size", "N", "forged certificates cached per worker"},
    {"log-level", "log_level", "LEVEL", "debug | info | warn | error"},
    {"body-inspect-max", "body_inspect_max", "SIZE", "decoded bytes of a body that body rules scan (a request is held that long)"},
    {"body-response-hold", "body_response_hold", "SIZE", "bytes of a response body scanned before its head goes out (0: none)"},
    {"body-types", "body_types", "text|all", "bodies body rules scan: text-like types, or all"},
    {"body-uninspectable", "body_uninspectable", "pass|block", "a body that body rules cannot decode (unknown coding, corrupt): pass it, or block it"},
    {"capture-file", "capture_file", "FILE", "where body rules' captures go (JSON lines, mode 0600)"},
    {"help", NULL, NULL, "show this help"},
};
#define N_RUN_OPTIONS (sizeof(run_options) / sizeof(run_options[0]))

static void print_duration(FILE *f, unsigned ms)
{
    if (ms % 1000)
        fprintf(f, "%ums", ms);
    else
        fprintf(f, "%us", ms / 1000);
}

static void print_size(FILE *f, uint64_t n)
{
    if (n && n % (1u << 20) == 0)
        fprintf(f, "%lluMiB", (unsigned long long)(n >> 20));
    else if (n && n % 1024 == 0)
        fprintf(f, "%lluKiB", (unsigned long long)(n >> 10));
    else
        fprintf(f, "%llu", (unsigned long long)n);
}

/* The default shown for an option, from a freshly defaulted config. */
static void print_default(FILE *f, const struct config *d, const char *key)
{
    if (!key)
        return;
    fprintf(f, " (default: ");
    if (!strcmp(key, "listen"))
        fprintf(f, "127.0.0.1:3128");
    else if (!strcmp(key, "mode"))
        fprintf(f, "explicit");
    else if (!strcmp(key, "ca_dir"))
        fprintf(f, "%s", d->ca_dir);
    else if (!strcmp(key, "upstream_ca"))
        fprintf(f, "system store");
    else if (!strcmp(key, "conn_log") || !strcmp(key, "request_log") || !strcmp(key, "keylog"))
        fprintf(f, "off");
    else if (!strcmp(key, "request_log_drop_query"))
        fprintf(f, "no");
    else if (!strcmp(key, "request_log_headers"))
        fprintf(f, "yes");
    else if (!strcmp(key, "request_log_redact"))
        fprintf(f, "none besides Authorization, Proxy-Authorization, Cookie, Set-Cookie");
    else if (!strcmp(key, "workers"))
        fprintf(f, "%d, the core count", d->workers);
    else if (!strcmp(key, "connect_timeout"))
        print_duration(f, d->connect_timeout_ms);
    else if (!strcmp(key, "handshake_timeout"))
        print_duration(f, d->handshake_timeout_ms);
    else if (!strcmp(key, "idle_timeout"))
        print_duration(f, d->idle_timeout_ms);
    else if (!strcmp(key, "shutdown_timeout"))
        print_duration(f, d->shutdown_timeout_ms);
    else if (!strcmp(key, "first_byte_timeout"))
        print_duration(f, d->first_byte_timeout_ms);
    else if (!strcmp(key, "leaf_key"))
        fprintf(f, "%s", ca_key_type_name(d->leaf_key));
    else if (!strcmp(key, "cert_cache_size"))
        fprintf(f, "%zu", d->cert_cache_size);
    else if (!strcmp(key, "log_level"))
        fprintf(f, "info");
    else if (!strcmp(key, "body_inspect_max"))
        print_size(f, d->body_inspect_max);
    else if (!strcmp(key, "body_response_hold"))
        print_size(f, d->body_response_hold);
    else if (!strcmp(key, "body_types"))
        fprintf(f, "text");
    else if (!strcmp(key, "body_uninspectable"))
        fprintf(f, "pass");
    else if (!strcmp(key, "capture_file"))
        fprintf(f, "off");
    fprintf(f, ")");
}

static void run_usage(FILE *f)
{
    struct config d;
    config_init_defaults(&d);
    fprintf(f, "usage: sluice run [OPTIONS]\n\nRuns the gateway until SIGTERM or SIGINT.\n"
               "Every option is also a key of the YAML config (--conn-log is conn_log).\n"
               "Durations: 250ms, 10s, 5m, or a number of seconds. "
               "Sizes: 65536, 64KiB (64k), 1MiB (1m).\n\n");
    for (size_t i = 0; i < N_RUN_OPTIONS; i++) {
        const struct run_option *o = &run_options[i];
        fprintf(f, "  --%s%s%s\n      %s", o->flag, o->arg ? " " : "", o->arg ? o->arg : "",
                o->help);
        print_default(f, &d, o->key);
        fprintf(f, "\n");
    }
    config_free(&d);
}

static void main_usage(FILE *f)
{
    fprintf(f, "usage: sluice COMMAND [OPTIONS]\n\n"
               "sluice is a TLS inspection gateway: it intercepts TLS for the clients that\n"
               "trust its CA, verifies every upstream, and logs each connection.\n\n"
               "commands:\n"
               "  run           run the gateway (sluice run --help)\n"
               "  ca            create or export the CA (sluice ca --help)\n"
               "  check-config  validate a config, its policy and lists\n"
               "                (sluice check-config FILE)\n"
               "  explain       what the policy decides for a connection\n"
               "                (sluice explain --help)\n\n"
               "options:\n"
               "  --version  print the version\n"
               "  --help     show this help\n");
}

/* Builds getopt's table from run_options: every option but --help takes an argument. */
static void run_build_longopts(struct option *longopts)
{
    for (size_t i = 0; i < N_RUN_OPTIONS; i++)
        longopts[i] = (struct option){run_options[i].flag,
                                      run_options[i].arg ? required_argument : no_argument, NULL,
                                      (int)i + 1};
    longopts[N_RUN_OPTIONS] = (struct option){0};
}

static int usage_error(const char *fmt, const char *what)
{
    fprintf(stderr, "sluice: ");
    fprintf(stderr, fmt, what);
    fprintf(stderr, " (see sluice run --help)\n");
    return 2;
}

/* First pass: --help and --config, so the file applies before the other options. */
static int run_first_pass(int argc, char **argv, const struct option *longopts,
                          const char **config_path, int *help)
{
    optind = 1;
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        if (opt == '?')
            return usage_error("unknown option '%s'", argv[optind - 1]);
        if (opt == ':')
            return usage_error("option '%s' needs a value", argv[optind - 1]);
        const struct run_option *o = &run_options[opt - 1];
        if (!strcmp(o->flag, "help"))
            *help = 1;
        else if (!strcmp(o->flag, "config"))
            *config_path = optarg;
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    return 0;
}

/* Applies the command-line options in order. 0, or -1 with err naming the flag. */
static int run_apply_options(int argc, char **argv, const struct option *longopts,
                             struct config *cfg, char *err, size_t errlen)
{
    char why[512];
    int opt, cleared_listen = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        const struct run_option *o = &run_options[opt - 1];
        if (!o->key)
            continue;
        if (!strcmp(o->key, "listen") && !cleared_listen++)
            config_clear_listen(cfg);
        if (config_set(cfg, o->key, optarg, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "--%s %s: %s", o->flag, optarg, why);
            return -1;
        }
    }
    return 0;
}

/* What `sluice run` was given, kept so SIGHUP can build the configuration again. */
struct run_args {
    int argc;
    char **argv;
    const struct option *longopts;
    const char *config_path;
    bool usage_error; /* the last failure was the command line's, not the file's */
};

/* Defaults, then the file, then the command line: at start and on every reload. */
static int run_load_config(struct config *cfg, char *err, size_t errlen, void *arg)
{
    struct run_args *ra = arg;
    ra->usage_error = false;
    if (config_init_defaults(cfg) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (ra->config_path && config_load_file(cfg, ra->config_path, err, errlen) != 0)
        return -1;
    if (run_apply_options(ra->argc, ra->argv, ra->longopts, cfg, err, errlen) != 0) {
        ra->usage_error = true;
        return -1;
    }
    return config_finish(cfg, err, errlen);
}

static int cmd_run(int argc, char **argv)
{
    struct option longopts[N_RUN_OPTIONS + 1];
    struct run_args ra = {argc, argv, longopts, NULL, false};
    int help = 0, rc;
    char err[1024];
    struct config cfg;
    run_build_longopts(longopts);
    if ((rc = run_first_pass(argc, argv, longopts, &ra.config_path, &help)) != 0)
        return rc;
    if (help) {
        run_usage(stdout);
        return 0;
    }
    memset(&cfg, 0, sizeof(cfg));
    if (run_load_config(&cfg, err, sizeof(err), &ra) != 0) {
        fprintf(stderr, "sluice: %s\n", err);
        rc = ra.usage_error ? 2 : 1;
    } else {
        gateway_set_reloader(run_load_config, &ra);
        rc = gateway_run(&cfg);
    }
    config_free(&cfg);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        main_usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
        printf("sluice %s\n", SLUICE_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        main_usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "run"))
        return cmd_run(argc - 1, argv + 1);
    if (!strcmp(cmd, "ca"))
        return ca_cli_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "check-config"))
        return policy_cli_check_config(argc - 1, argv + 1, stdout, stderr);
    if (!strcmp(cmd, "explain"))
        return policy_cli_explain(argc - 1, argv + 1, stdout, stderr);
    fprintf(stderr,
            "sluice: unknown command '%s' (commands: run, ca, check-config, explain; see sluice "
            "--help)\n",
            cmd);
    return 2;
}
