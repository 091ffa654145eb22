/* Unit tests for pinning: refusals within a window pin a name for a while. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "pinning.h"

static void test_threshold_within_window_pins(void **state)
{
    (void)state;
    struct pinning *p = pinning_new(16);
    assert_false(pinning_record_refusal(p, "app.example", 1000, 3, 60000, 3600000));
    assert_false(pinning_record_refusal(p, "APP.example", 2000, 3, 60000, 3600000));
    assert_false(pinning_is_pinned(p, "app.example", 2500));
    assert_true(pinning_record_refusal(p, "app.example", 3000, 3, 60000, 3600000));
    assert_true(pinning_is_pinned(p, "app.example", 3001));
    assert_true(pinning_is_pinned(p, "App.Example", 3600000));
    assert_false(pinning_is_pinned(p, "other.example", 3001));
    /* pinned for ttl, then intercepted again */
    assert_false(pinning_is_pinned(p, "app.example", 3000 + 3600000));
    pinning_free(p);
}

static void test_refusals_outside_window_do_not_add_up(void **state)
{
    (void)state;
    struct pinning *p = pinning_new(16);
    assert_false(pinning_record_refusal(p, "a.example", 0, 3, 1000, 5000));
    assert_false(pinning_record_refusal(p, "a.example", 900, 3, 1000, 5000));
    assert_false(pinning_record_refusal(p, "a.example", 2500, 3, 1000, 5000)); /* new window */
    assert_false(pinning_record_refusal(p, "a.example", 3000, 3, 1000, 5000));
    assert_false(pinning_is_pinned(p, "a.example", 3100));
    assert_true(pinning_record_refusal(p, "a.example", 3200, 3, 1000, 5000));
    pinning_free(p);
}

static void test_pinned_once_then_logged_once(void **state)
{
    (void)state;
    struct pinning *p = pinning_new(16);
    pinning_record_refusal(p, "b.example", 0, 1, 1000, 5000);
    /* further refusals while pinned do not report "newly pinned" again */
    assert_false(pinning_record_refusal(p, "b.example", 10, 1, 1000, 5000));
    assert_true(pinning_is_pinned(p, "b.example", 20));
    pinning_free(p);
}

static void test_bounded_table_evicts_least_recent(void **state)
{
    (void)state;
    struct pinning *p = pinning_new(2);
    pinning_record_refusal(p, "one.example", 0, 1, 1000, 100000);
    pinning_record_refusal(p, "two.example", 10, 1, 1000, 100000);
    assert_true(pinning_is_pinned(p, "one.example", 20)); /* one is now the most recent */
    pinning_record_refusal(p, "three.example", 30, 1, 1000, 100000);
    assert_true(pinning_is_pinned(p, "one.example", 40));
    assert_false(pinning_is_pinned(p, "two.example", 40));
    assert_true(pinning_is_pinned(p, "three.example", 40));
    pinning_free(p);
}

static void test_empty_table_and_bad_names(void **state)
{
    (void)state;
    struct pinning *p = pinning_new(4);
    assert_false(pinning_is_pinned(p, "x.example", 0));
    assert_false(pinning_is_pinned(p, NULL, 0));
    assert_false(pinning_record_refusal(p, "", 0, 1, 1, 1));
    assert_false(pinning_record_refusal(p, NULL, 0, 1, 1, 1));
    pinning_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threshold_within_window_pins),
        cmocka_unit_test(test_refusals_outside_window_do_not_add_up),
        cmocka_unit_test(test_pinned_once_then_logged_once),
        cmocka_unit_test(test_bounded_table_evicts_least_recent),
        cmocka_unit_test(test_empty_table_and_bad_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
