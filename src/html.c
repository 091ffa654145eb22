/* html: escaping and a bounded writer for the gateway's own pages. */
#include "html.h"

#include <string.h>

void html_put(struct html_out *o, const char *s, size_t n)
{
    if (o->overflow || n >= o->cap - o->len) {
        o->overflow = true;
        return;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

void html_str(struct html_out *o, const char *s)
{
    html_put(o, s, strlen(s));
}

void html_escaped(struct html_out *o, const char *s)
{
    for (; s && *s; s++) {
        const char *e = *s == '&'    ? "&amp;"
                        : *s == '<'  ? "&lt;"
                        : *s == '>'  ? "&gt;"
                        : *s == '"'  ? "&quot;"
                        : *s == '\'' ? "&#39;"
                                     : NULL;
        if (e)
            html_str(o, e);
        else
            html_put(o, s, 1);
    }
}

size_t html_default_block_page(char *buf, size_t cap, const char *authority, const char *rule,
                               const char *ref)
{
    struct html_out o = {buf, cap, 0, false};
    html_str(&o, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Blocked</title>"
                 "</head>\n<body><h1>Blocked by the gateway</h1>\n<p>The request to <b>");
    html_escaped(&o, authority);
    html_str(&o, "</b> is not allowed by this network's policy.</p>\n");
    if (rule && rule[0]) {
        html_str(&o, "<p>Rule: <code>");
        html_escaped(&o, rule);
        html_str(&o, "</code></p>\n");
    }
    if (ref && ref[0]) {
        html_str(&o, "<p>Reference: <code>");
        html_escaped(&o, ref);
        html_str(&o, "</code></p>\n");
    }
    html_str(&o, "</body></html>\n");
    if (cap > 0)
        buf[o.len] = '\0';
    return o.len;
}
