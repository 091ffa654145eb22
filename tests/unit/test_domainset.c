/* Unit tests for src/domainset.c: name normalisation (case, trailing dot, IDNA), the set's
 * coverage kinds and parent walk, growth, and every list format with its skipped lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "domainset.h"

static const char *data_path(const char *name)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/policy/%s", TEST_DATA_DIR, name);
    return path;
}

static void assert_normal(const char *in, const char *want)
{
    char out[DOMAIN_MAX + 1];
    size_t len = 0;
    const char *why = NULL;

    if (domain_normalize(in, strlen(in), out, &len, &why) != 0)
        fail_msg("'%s' refused: %s", in, why);
    assert_string_equal(out, want);
    assert_int_equal(len, strlen(want));
}

static void assert_not_name(const char *in, const char *want_why)
{
    char out[DOMAIN_MAX + 1];
    size_t len;
    const char *why = NULL;

    if (domain_normalize(in, strlen(in), out, &len, &why) == 0)
        fail_msg("'%s' accepted as '%s'", in, out);
    assert_string_equal(why, want_why);
}

static void test_normalize_case_and_trailing_dot(void **state)
{
    assert_normal("Example.COM", "example.com");
    assert_normal("example.com.", "example.com");
    assert_normal("a_b-c.example", "a_b-c.example");
    assert_normal("x", "x");
    assert_normal("192.0.2.1", "192.0.2.1");
    assert_not_name("example.com..", "empty label (two dots in a row, or a leading dot)");
    assert_not_name(".example.com", "empty label (two dots in a row, or a leading dot)");
    assert_not_name("", "empty name");
    assert_not_name(".", "empty name");
}

static void test_normalize_idna(void **state)
{
    assert_normal("bücher.example", "xn--bcher-kva.example");
    assert_normal("BÜCHER.Example.", "xn--bcher-kva.example");
    assert_normal("XN--BCHER-KVA.example", "xn--bcher-kva.example");
    assert_normal("faß.de", "xn--fa-hia.de"); /* non-transitional, as browsers do */
    assert_not_name("b\xc3\xbc\xff.example", "not a valid internationalised name (IDNA)");
    assert_not_name("-bücher.example", "not a valid internationalised name (IDNA)");
}

static void test_normalize_limits(void **state)
{
    char label[80], name[300];

    memset(label, 'a', 63);
    label[63] = '\0';
    snprintf(name, sizeof(name), "%s.example", label);
    assert_normal(name, name);
    memset(label, 'a', 64);
    label[64] = '\0';
    snprintf(name, sizeof(name), "%s.example", label);
    assert_not_name(name, "label longer than 63 characters");
    /* 253 characters is the most; one more is refused, with or without a trailing dot. */
    memset(name, 0, sizeof(name));
    for (int i = 0; i < 4; i++)
        strcat(name, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa."); /* 63 */
    name[252] = '\0';
    assert_int_equal(strlen(name), 252);
    strcat(name, "b");
    assert_normal(name, name);
    strcat(name, ".");
    char want[260];
    snprintf(want, sizeof(want), "%.*s", 253, name);
    assert_normal(name, want);
    name[253] = 'c';
    assert_not_name(name, "name longer than 253 characters");
    assert_not_name("a b.example",
                    "character not allowed in a name (letters, digits, '-', '_', '.')");
    assert_not_name("a.*.example", "'*' is allowed only as a leading '*.'");
}

static void test_normalize_nul(void **state)
{
    char out[DOMAIN_MAX + 1];
    size_t len;
    const char *why = NULL;

    assert_int_equal(domain_normalize("a\0b", 3, out, &len, &why), -1);
    assert_int_equal(domain_normalize("\xc3\xbc\0b", 4, out, &len, &why), -1);
    assert_string_equal(why, "NUL byte in name");
}

static void test_query_suffixes(void **state)
{
    struct domain_query q;

    assert_int_equal(domain_query_init(&q, "A.b.Example.com."), 0);
    assert_string_equal(q.name, "a.b.example.com");
    assert_int_equal(q.n_suffixes, 4);
    assert_string_equal(q.name + q.suffix[0].off, "a.b.example.com");
    assert_string_equal(q.name + q.suffix[1].off, "b.example.com");
    assert_string_equal(q.name + q.suffix[2].off, "example.com");
    assert_string_equal(q.name + q.suffix[3].off, "com");
    assert_int_equal(domain_query_init(&q, "bad name"), -1);
    assert_int_equal(domain_query_init(&q, NULL), -1);
}

static bool in_set(const struct domainset *set, const char *name)
{
    struct domain_query q;
    return domain_query_init(&q, name) == 0 && domainset_match(set, &q, NULL);
}

static void test_kinds(void **state)
{
    struct domainset *set = domainset_new();
    const char *why;

    assert_non_null(set);
    assert_false(in_set(set, "example.com")); /* empty */
    assert_int_equal(domainset_add_pattern(set, "exact.example", &why), 0);
    assert_int_equal(domainset_add_pattern(set, "*.sub.example", &why), 0);
    assert_int_equal(domainset_add(set, "tree.example", 12, DOMAINSET_TREE), 0);
    assert_int_equal(domainset_size(set), 3);

    assert_true(in_set(set, "exact.example"));
    assert_true(in_set(set, "EXACT.example."));
    assert_false(in_set(set, "a.exact.example"));
    assert_false(in_set(set, "example"));

    assert_false(in_set(set, "sub.example"));
    assert_true(in_set(set, "a.sub.example"));
    assert_true(in_set(set, "x.y.a.sub.example"));
    assert_false(in_set(set, "asub.example")); /* a suffix of the text, not of the labels */

    assert_true(in_set(set, "tree.example"));
    assert_true(in_set(set, "deep.er.tree.example"));
    assert_false(in_set(set, "subtree.example"));

    /* Adding a name again widens what it covers. */
    assert_int_equal(domainset_add_pattern(set, "exact.example", &why), 0);
    assert_int_equal(domainset_add_pattern(set, "*.exact.example", &why), 0);
    assert_int_equal(domainset_size(set), 3);
    assert_true(in_set(set, "a.exact.example"));
    assert_true(in_set(set, "exact.example"));

    assert_int_equal(domainset_add_pattern(set, "a.*.example", &why), -1);
    assert_string_equal(why, "'*' is allowed only as a leading '*.'");
    assert_int_equal(domainset_add_pattern(set, "*", &why), -1);
    assert_int_equal(domainset_add_pattern(set, "*.", &why), -1);
    domainset_free(set);
}

static void test_overlapping_suffixes(void **state)
{
    struct domainset *set = domainset_new();
    struct domain_query q;
    size_t at = 99;
    const char *why;

    /* example.com exactly, and everything under a.example.com: a name under example.com but
     * not under a.example.com is out, whatever the order of the parents walked. */
    assert_int_equal(domainset_add_pattern(set, "example.com", &why), 0);
    assert_int_equal(domainset_add_pattern(set, "*.a.example.com", &why), 0);
    assert_true(in_set(set, "example.com"));
    assert_false(in_set(set, "b.example.com"));
    assert_false(in_set(set, "a.example.com"));
    assert_true(in_set(set, "x.a.example.com"));
    assert_int_equal(domain_query_init(&q, "x.y.a.example.com"), 0);
    assert_true(domainset_match(set, &q, &at));
    assert_string_equal(q.name + at, "a.example.com");
    /* com as a tree covers everything; the longest entry is not needed to match. */
    assert_int_equal(domainset_add(set, "com", 3, DOMAINSET_TREE), 0);
    assert_true(in_set(set, "b.example.com"));
    assert_int_equal(domain_query_init(&q, "b.example.com"), 0);
    assert_true(domainset_match(set, &q, &at));
    assert_string_equal(q.name + at, "com");
    assert_false(in_set(set, "example.org"));
    domainset_free(set);
}

static void test_punycode_both_ways(void **state)
{
    struct domainset *set = domainset_new();
    const char *why;

    assert_int_equal(domainset_add_pattern(set, "*.bücher.example", &why), 0);
    assert_int_equal(domainset_add_pattern(set, "xn--mller-kva.example", &why), 0);
    assert_true(in_set(set, "shop.xn--bcher-kva.example"));
    assert_true(in_set(set, "shop.BÜCHER.example"));
    assert_true(in_set(set, "müller.example"));
    assert_true(in_set(set, "MÜLLER.EXAMPLE."));
    assert_false(in_set(set, "mueller.example"));
    domainset_free(set);
}

static void test_growth(void **state)
{
    struct domainset *set = domainset_new();
    char name[64];

    for (int i = 0; i < 20000; i++) {
        int n = snprintf(name, sizeof(name), "host%d.example%d.test", i, i % 7);
        assert_int_equal(domainset_add(set, name, (size_t)n, DOMAINSET_TREE), 0);
    }
    assert_int_equal(domainset_size(set), 20000);
    assert_true(domainset_memory(set) > 20000 * 8);
    for (int i = 0; i < 20000; i += 97) {
        snprintf(name, sizeof(name), "www.host%d.example%d.test", i, i % 7);
        assert_true(in_set(set, name));
        snprintf(name, sizeof(name), "host%d.example%d.test", i, (i + 1) % 7);
        assert_false(in_set(set, name));
    }
    domainset_free(set);
}

static void parse(struct domainset *set, const char *text, struct domainset_list_stats *st)
{
    assert_int_equal(domainset_add_list(set, text, strlen(text), st), 0);
}

static void test_list_formats_inline(void **state)
{
    struct domainset *set = domainset_new();
    struct domainset_list_stats st;

    parse(set,
          "\xef\xbb\xbfplain.example\r\n"
          "  # comment\n"
          "\n"
          "0.0.0.0 hosts.example # comment\n"
          "127.0.0.1 localhost\n"
          ":: v6hosts.example\n"
          "||adblock.example^\n"
          "! adblock comment\n"
          "*.wild.example\n"
          "last.example",
          &st);
    assert_int_equal(st.lines, 10);
    assert_int_equal(st.skipped, 0);
    assert_int_equal(st.names, 6);
    assert_int_equal(st.first_bad_line, 0);
    assert_true(in_set(set, "plain.example"));
    assert_true(in_set(set, "sub.plain.example")); /* a list entry covers its subdomains */
    assert_true(in_set(set, "hosts.example"));
    assert_true(in_set(set, "v6hosts.example"));
    assert_true(in_set(set, "x.adblock.example"));
    assert_false(in_set(set, "wild.example"));
    assert_true(in_set(set, "a.wild.example"));
    assert_true(in_set(set, "last.example"));
    assert_false(in_set(set, "localhost"));
    domainset_free(set);
}

static void test_list_bad_lines_counted(void **state)
{
    struct domainset *set = domainset_new();
    struct domainset_list_stats st;

    parse(set, "ok.example\nbad name\n||x.example^$third-party\n0.0.0.0\nok2.example\n", &st);
    assert_int_equal(st.lines, 5);
    assert_int_equal(st.names, 2);
    assert_int_equal(st.skipped, 3);
    assert_int_equal(st.first_bad_line, 2);
    assert_string_equal(st.first_bad_why,
                        "more than one name on a line (hosts-file lines start with an IP address)");
    parse(set, "\n\n||a.example^$important\n", &st);
    assert_int_equal(st.first_bad_line, 3);
    assert_string_equal(st.first_bad_why, "adblock rule other than ||name^ (options, paths, "
                                          "exceptions are not supported)");
    parse(set, "0.0.0.0\n", &st);
    assert_string_equal(st.first_bad_why, "an IP address without a name");
    parse(set, "a..b\n", &st);
    assert_string_equal(st.first_bad_why, "empty label (two dots in a row, or a leading dot)");
    domainset_free(set);
}

static void load_file(struct domainset *set, const char *name, struct domainset_list_stats *st)
{
    char err[512] = "";
    if (domainset_add_list_file(set, data_path(name), st, err, sizeof(err)) != 0)
        fail_msg("%s", err);
}

static void test_list_files(void **state)
{
    struct domainset *set = domainset_new();
    struct domainset_list_stats st;

    load_file(set, "plain.list", &st);
    assert_int_equal(st.names, 4);
    assert_int_equal(st.skipped, 0);
    assert_true(in_set(set, "blocked.example"));
    assert_true(in_set(set, "big.example.org"));
    assert_true(in_set(set, "x.wild.example"));
    assert_true(in_set(set, "www.xn--bcher-kva.example"));

    load_file(set, "hosts.list", &st);
    assert_int_equal(st.skipped, 0);
    assert_int_equal(st.names, 4);
    assert_true(in_set(set, "t2.example.net"));
    assert_true(in_set(set, "tabbed.example.net"));
    assert_false(in_set(set, "localhost"));
    assert_false(in_set(set, "example.net"));

    load_file(set, "adblock.list", &st);
    assert_int_equal(st.names, 2);
    assert_int_equal(st.skipped, 3); /* $options, @@exception, /path */
    assert_int_equal(st.first_bad_line, 5);
    assert_true(in_set(set, "ads.example.com"));
    assert_false(in_set(set, "opts.example"));
    assert_false(in_set(set, "allowed.example"));

    load_file(set, "junk.list", &st);
    assert_int_equal(st.lines, 6);
    assert_int_equal(st.names, 2);
    assert_int_equal(st.skipped, 4);
    assert_int_equal(st.first_bad_line, 2);
    assert_true(in_set(set, "also-good.example"));
    domainset_free(set);
}

static void test_list_file_errors(void **state)
{
    struct domainset *set = domainset_new();
    struct domainset_list_stats st;
    char err[512];

    assert_int_equal(domainset_add_list_file(set, "/nonexistent/x.list", &st, err, sizeof(err)),
                     -1);
    assert_string_equal(err, "cannot read /nonexistent/x.list: No such file or directory");
    assert_int_equal(domainset_add_list_file(set, "/dev/null", &st, err, sizeof(err)), -1);
    assert_string_equal(err, "cannot read /dev/null: not a regular file");
    assert_int_equal(domainset_add_list_file(set, TEST_DATA_DIR, &st, err, sizeof(err)), -1);
    domainset_free(set);
}

/* Lines cross the 1 MiB read chunks, and a 3 MiB line is one skipped line. */
static void test_list_file_chunks(void **state)
{
    char path[] = "/tmp/sluice-domainset-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    struct domainset *set = domainset_new();
    struct domainset_list_stats st;
    char err[512];
    int n = 0;

    assert_non_null(f);
    for (; n < 60000; n++)
        fprintf(f, "n%d.chunk.example\n", n);
    for (int i = 0; i < 3 * 1024 * 1024; i++)
        fputc('x', f);
    fputc('\n', f);
    fprintf(f, "after.long.example\nno-newline.example");
    fclose(f);
    assert_int_equal(domainset_add_list_file(set, path, &st, err, sizeof(err)), 0);
    unlink(path);
    assert_int_equal(st.lines, 60003);
    assert_int_equal(st.names, 60002);
    assert_int_equal(st.skipped, 1);
    assert_int_equal(st.first_bad_line, 60001);
    for (int i = 0; i < n; i += 13) {
        char name[64];
        snprintf(name, sizeof(name), "n%d.chunk.example", i);
        assert_true(in_set(set, name));
    }
    assert_true(in_set(set, "after.long.example"));
    assert_true(in_set(set, "no-newline.example"));
    domainset_free(set);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize_case_and_trailing_dot),
        cmocka_unit_test(test_normalize_idna),
        cmocka_unit_test(test_normalize_limits),
        cmocka_unit_test(test_normalize_nul),
        cmocka_unit_test(test_query_suffixes),
        cmocka_unit_test(test_kinds),
        cmocka_unit_test(test_overlapping_suffixes),
        cmocka_unit_test(test_punycode_both_ways),
        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_list_formats_inline),
        cmocka_unit_test(test_list_bad_lines_counted),
        cmocka_unit_test(test_list_files),
        cmocka_unit_test(test_list_file_errors),
        cmocka_unit_test(test_list_file_chunks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
