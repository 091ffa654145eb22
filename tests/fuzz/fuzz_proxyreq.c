/* libFuzzer harness: explicit-proxy request heads (proxyreq_parse). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proxyreq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proxyreq req;
    enum proxyreq_result r = proxyreq_parse((const char *)data, size, &req);
    if (r == PROXYREQ_OK && req.head_len > size)
        __builtin_trap();
    proxyreq_free(&req);
    return 0;
}
