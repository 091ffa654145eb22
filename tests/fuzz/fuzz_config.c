/* libFuzzer driver for the config loader: the input is a YAML file given to
 * config_load_buffer, then finished and freed; the same bytes, as one string, go through the
 * value parsers shared with the command line. Must never crash or leak, every failure must
 * name the file, and a loaded config must satisfy the documented bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define FUZZ_NAME "fuzz.yaml"

static void fuzz_check(int ok)
{
    if (!ok)
        abort();
}

static void fuzz_load(const uint8_t *data, size_t size)
{
    struct config cfg;
    char err[512] = "";

    fuzz_check(config_init_defaults(&cfg) == 0);
    if (config_load_buffer(&cfg, FUZZ_NAME, (const char *)data, size, err, sizeof(err)) == 0) {
        fuzz_check(cfg.source && strcmp(cfg.source, FUZZ_NAME) == 0);
        fuzz_check(cfg.n_listen <= CONFIG_MAX_LISTEN);
        fuzz_check(cfg.workers >= 1 && cfg.workers <= 256);
        fuzz_check(cfg.cert_cache_size >= 1 && cfg.cert_cache_size <= 10000000);
        fuzz_check(cfg.idle_timeout_ms > 0 && cfg.idle_timeout_ms <= 24u * 3600 * 1000);
        fuzz_check(cfg.mode != CONFIG_MODE_FIXED || (cfg.fixed_host && cfg.fixed_port > 0));
        if (config_finish(&cfg, err, sizeof(err)) == 0)
            fuzz_check(cfg.n_listen >= 1);
    } else {
        fuzz_check(strncmp(err, FUZZ_NAME ":", strlen(FUZZ_NAME ":")) == 0);
    }
    config_free(&cfg);
}

static void fuzz_values(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    struct config_listen l;
    char err[256], host[256];
    uint16_t port;
    unsigned ms;

    fuzz_check(s != NULL);
    memcpy(s, data, size);
    s[size] = '\0';
    if (config_parse_listen(s, &l, err, sizeof(err)) == 0)
        fuzz_check(l.addr_len > 0 && memchr(l.text, '\0', sizeof(l.text)));
    if (config_parse_hostport(s, host, sizeof(host), &port) == 0)
        fuzz_check(port > 0 && host[0] != '\0');
    if (config_parse_duration_ms(s, &ms) == 0)
        fuzz_check(ms > 0 && ms <= 24u * 3600 * 1000);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_load(data, size);
    fuzz_values(data, size);
    return 0;
}
