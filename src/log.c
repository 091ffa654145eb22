/* log: leveled human-readable messages on stderr. */
#include "log.h"

#include <openssl/err.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_min_level = LOG_INFO; /* changed by a reload while workers log */
static const char *const log_level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level)
{
    atomic_store_explicit(&log_min_level, (int)level, memory_order_relaxed);
}

int log_enabled(enum log_level level)
{
    return (int)level >= atomic_load_explicit(&log_min_level, memory_order_relaxed);
}

char *log_time_rfc3339(char *buf, unsigned long size)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, size - n, ".%03ldZ", (long)(tv.tv_usec / 1000));
    return buf;
}

static void log_vwrite(enum log_level level, const char *fmt, va_list ap)
{
    char line[2048], ts[40];
    int n = snprintf(line, sizeof(line), "%s %s: ", log_time_rfc3339(ts, sizeof(ts)),
                     log_level_names[level]);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, fmt, ap);
    va_end(ap);
}

void log_openssl(enum log_level level, const char *what)
{
    char reasons[1024] = "";
    size_t used = 0;
    unsigned long e;
    while ((e = ERR_get_error()) != 0) {
        char one[256];
        ERR_error_string_n(e, one, sizeof(one));
        int n = snprintf(reasons + used, sizeof(reasons) - used, "%s%s", used ? "; " : "", one);
        if (n < 0 || (size_t)n >= sizeof(reasons) - used)
            break;
        used += (size_t)n;
    }
    log_msg(level, "%s%s%s", what, used ? ": " : "", reasons);
}
