/* test_html: the bounded writer, escaping, and the built-in block page. */
#include "html.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static void test_escapes_the_five_characters(void **state)
{
    (void)state;
    char buf[64];
    struct html_out o = {buf, sizeof(buf), 0, false};
    html_escaped(&o, "a&b<c>d\"e'f");
    html_escaped(&o, NULL);
    buf[o.len] = '\0';
    assert_false(o.overflow);
    assert_string_equal(buf, "a&amp;b&lt;c&gt;d&quot;e&#39;f");
}

/* What does not fit is not written, not even part of an entity, and nothing after it is. */
static void test_overflow_stops_whole_and_keeps_room_for_the_nul(void **state)
{
    (void)state;
    char buf[8];
    struct html_out o = {buf, sizeof(buf), 0, false};
    html_escaped(&o, "abcd<e"); /* "&lt;" would need 4 of the 3 bytes left before the NUL */
    assert_true(o.overflow);
    assert_int_equal(o.len, 4);
    html_str(&o, "x");
    assert_int_equal(o.len, 4);
    struct html_out full = {buf, sizeof(buf), 0, false};
    html_str(&full, "1234567");
    assert_false(full.overflow);
    html_put(&full, "8", 1);
    assert_true(full.overflow);
    assert_int_equal(full.len, 7);
    struct html_out none = {buf, 0, 0, false};
    html_put(&none, "", 0);
    assert_true(none.overflow);
}

static void test_default_block_page(void **state)
{
    (void)state;
    char buf[1024];
    size_t n = html_default_block_page(buf, sizeof(buf), "evil.example<script>", "no-evil",
                                       "conn 7 / 1");
    assert_int_equal(n, strlen(buf));
    assert_non_null(strstr(buf, "<b>evil.example&lt;script&gt;</b> is not allowed"));
    assert_non_null(strstr(buf, "<p>Rule: <code>no-evil</code></p>"));
    assert_non_null(strstr(buf, "<p>Reference: <code>conn 7 / 1</code></p>"));
    assert_null(strstr(buf, "<script>"));
    n = html_default_block_page(buf, sizeof(buf), "a.example", "", NULL);
    assert_null(strstr(buf, "Rule:"));
    assert_null(strstr(buf, "Reference:"));
    assert_true(n > 0 && buf[n - 1] == '\n');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escapes_the_five_characters),
        cmocka_unit_test(test_overflow_stops_whole_and_keeps_room_for_the_nul),
        cmocka_unit_test(test_default_block_page),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
