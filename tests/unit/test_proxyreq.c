/* Unit tests for proxyreq: explicit-proxy request heads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "proxyreq.h"

static enum proxyreq_result parse(const char *s, struct proxyreq *req)
{
    return proxyreq_parse(s, strlen(s), req);
}

static void test_connect_host_port(void **state)
{
    (void)state;
    struct proxyreq req;
    const char *s = "CONNECT example.com:8443 HTTP/1.1\r\nHost: example.com:8443\r\n\r\n\x16\x03\x01";
    assert_int_equal(parse(s, &req), PROXYREQ_OK);
    assert_int_equal(req.kind, PROXYREQ_CONNECT);
    assert_string_equal(req.host, "example.com");
    assert_int_equal(req.port, 8443);
    /* the head ends at the blank line: the tunnel's first bytes are not part of it */
    assert_int_equal(req.head_len, strlen(s) - 3);
    proxyreq_free(&req);
}

static void test_connect_ipv6(void **state)
{
    (void)state;
    struct proxyreq req;
    assert_int_equal(parse("CONNECT [::1]:443 HTTP/1.1\r\n\r\n", &req), PROXYREQ_OK);
    assert_string_equal(req.host, "::1");
    assert_int_equal(req.port, 443);
}

static void test_connect_without_port_refused(void **state)
{
    (void)state;
    struct proxyreq req;
    assert_int_equal(parse("CONNECT example.com HTTP/1.1\r\n\r\n", &req), PROXYREQ_ERROR);
    assert_int_equal(req.status, 400);
}

static void test_partial_head_needs_more(void **state)
{
    (void)state;
    struct proxyreq req;
    const char *s = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n";
    for (size_t i = 0; i < strlen(s); i++)
        assert_int_equal(proxyreq_parse(s, i, &req), PROXYREQ_NEED_MORE);
    assert_int_equal(proxyreq_parse(s, strlen(s), &req), PROXYREQ_OK);
}

static void test_forward_rewrites_to_origin_form(void **state)
{
    (void)state;
    struct proxyreq req;
    const char *s = "GET http://origin.test:8080/a/b?x=1 HTTP/1.1\r\nHost: origin.test:8080\r\n"
                    "Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic Zm9v\r\n"
                    "Accept: */*\r\n\r\n";
    assert_int_equal(parse(s, &req), PROXYREQ_OK);
    assert_int_equal(req.kind, PROXYREQ_FORWARD);
    assert_string_equal(req.host, "origin.test");
    assert_int_equal(req.port, 8080);
    const char *want = "GET /a/b?x=1 HTTP/1.1\r\nHost: origin.test:8080\r\nAccept: */*\r\n"
                       "Connection: close\r\n\r\n";
    assert_int_equal(req.forward_len, strlen(want));
    assert_memory_equal(req.forward_head, want, strlen(want));
    proxyreq_free(&req);
}

static void test_forward_default_port_and_added_host(void **state)
{
    (void)state;
    struct proxyreq req;
    assert_int_equal(parse("GET http://origin.test HTTP/1.0\r\n\r\n", &req), PROXYREQ_OK);
    assert_int_equal(req.port, 80);
    assert_non_null(strstr(req.forward_head, "GET / HTTP/1.0\r\n"));
    assert_non_null(strstr(req.forward_head, "Host: origin.test:80\r\n"));
    proxyreq_free(&req);
}

static void test_origin_form_refused(void **state)
{
    (void)state;
    struct proxyreq req;
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: x\r\n\r\n", &req), PROXYREQ_ERROR);
    assert_int_equal(req.status, 400);
    assert_non_null(strstr(req.error, "proxy"));
}

static void test_https_absolute_form_refused(void **state)
{
    (void)state;
    struct proxyreq req;
    assert_int_equal(parse("GET https://x/ HTTP/1.1\r\n\r\n", &req), PROXYREQ_ERROR);
    assert_int_equal(req.status, 501);
}

static void test_garbage_refused(void **state)
{
    (void)state;
    struct proxyreq req;
    assert_int_equal(parse("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n\r\n", &req), PROXYREQ_ERROR);
    assert_int_equal(req.status, 400);
}

static void test_oversized_head_refused(void **state)
{
    (void)state;
    static char big[PROXYREQ_MAX_HEAD + 100];
    struct proxyreq req;
    strcpy(big, "CONNECT a:1 HTTP/1.1\r\nX: ");
    memset(big + strlen(big), 'a', sizeof(big) - strlen(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(parse(big, &req), PROXYREQ_ERROR);
    assert_int_equal(req.status, 431);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_host_port),
        cmocka_unit_test(test_connect_ipv6),
        cmocka_unit_test(test_connect_without_port_refused),
        cmocka_unit_test(test_partial_head_needs_more),
        cmocka_unit_test(test_forward_rewrites_to_origin_form),
        cmocka_unit_test(test_forward_default_port_and_added_host),
        cmocka_unit_test(test_origin_form_refused),
        cmocka_unit_test(test_https_absolute_form_refused),
        cmocka_unit_test(test_garbage_refused),
        cmocka_unit_test(test_oversized_head_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
