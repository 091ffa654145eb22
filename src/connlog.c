/* connlog: append-only JSON-lines connection log. */
#include "connlog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

const char *connlog_action_name(enum connlog_action a)
{
    switch (a) {
    case CONNLOG_INTERCEPT:
        return "intercept";
    case CONNLOG_TCP:
        return "tcp";
    case CONNLOG_HTTP:
        return "http";
    case CONNLOG_PASSTHROUGH:
        return "passthrough";
    case CONNLOG_BLOCK:
        return "block";
    default:
        return NULL; /* closed before a decision: logged as null */
    }
}

int connlog_open(const char *path, char *err, size_t errlen)
{
    if (strcmp(path, "-") == 0)
        return dup(STDOUT_FILENO);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0)
        snprintf(err, errlen, "cannot open log %s: %s", path, strerror(errno));
    return fd;
}

void connlog_write(int fd, const char *line, size_t len)
{
    if (fd < 0)
        return;
    ssize_t n = write(fd, line, len);
    if (n != (ssize_t)len) {
        static _Atomic int warned;
        if (!warned++)
            log_msg(LOG_WARN, "connection log write failed: %s",
                    n < 0 ? strerror(errno) : "short write");
    }
}
