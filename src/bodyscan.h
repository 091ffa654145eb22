/* bodyscan: sans-I/O streaming scanner for one HTTP message body. It undoes the body's
 * Content-Encoding (identity, gzip, x-gzip, deflate in its zlib or raw form, br, zstd; up to three
 * stacked, like "gzip, br"), and looks for the patterns of a few body rules — case-insensitive
 * keywords and PCRE2 regexes — in the decoded bytes, carrying a window across pieces so that a
 * match split between two network reads is still found. It stops after a maximum of decoded
 * bytes (and of encoded bytes fed), so a decompression bomb costs at most that much work, and
 * keeps the first decoded bytes for a capture when asked. No I/O, no threads, no globals.
 *
 * Memory per scanner, fixed at creation: BODYSCAN_WINDOW + BODYSCAN_PIECE bytes of window,
 * the capture (at most limits.capture bytes, grown as bytes arrive), one PCRE2 match block,
 * and the decoders' state: zlib's ~45 KiB per gzip/deflate stage, brotli's ring buffer (up to
 * limits.decoder_mem in all; a stream that needs more is "not inspectable"), zstd's context and
 * window (at most 8 MiB, RFC 9659's limit for HTTP; a frame asking for more is not inspected).
 * See docs/POLICY.md, "Body rules". */
#ifndef SLUICE_BODYSCAN_H
#define SLUICE_BODYSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BODYSCAN_WINDOW 4096      /* bytes kept across pieces: longest match that may span two */
#define BODYSCAN_PIECE 16384      /* decoded bytes matched at a time */
#define BODYSCAN_KEYWORD_MAX 1024 /* longest keyword */
#define BODYSCAN_MAX_CODINGS 3    /* stacked content codings undone */
#define BODYSCAN_MAX_SETS 64      /* pattern sets (armed rules) per body */
/* Default cap on the decoders' memory: brotli's largest standard window (16 MiB, lgwin 24),
 * which browsers accept, needs a ring buffer that large once the body is that long. */
#define BODYSCAN_DECODER_MEM (17u << 20)
#define BODYSCAN_MATCH_LIMIT 10000000u /* PCRE2 match limit per piece */

/* ---- patterns: one body rule's keywords and regexes, built once at config load ------------ */

/* Immutable once built and then shared read-only by every thread. */
struct bodyscan_patterns;

/* A new empty set; NULL when out of memory. */
struct bodyscan_patterns *bodyscan_patterns_new(void);
void bodyscan_patterns_free(struct bodyscan_patterns *p);

/* Adds a keyword: kw[0..len) (borrowed, copied), matched ASCII-case-insensitively as a plain
 * byte string, 1..BODYSCAN_KEYWORD_MAX bytes. Returns 0, or -1 with err saying why. */
int bodyscan_patterns_add_keyword(struct bodyscan_patterns *p, const char *kw, size_t len,
                                  char *err, size_t errlen);

/* Adds a PCRE2 regex (NUL-terminated, borrowed), compiled at once in byte mode (no UTF
 * checks: bodies are bytes); case-sensitive unless it starts with (?i). Returns 0, or -1 with
 * err = PCRE2's message and offset. */
int bodyscan_patterns_add_regex(struct bodyscan_patterns *p, const char *re, char *err,
                                size_t errlen);

/* How many keywords and regexes the set holds. */
void bodyscan_patterns_count(const struct bodyscan_patterns *p, size_t *keywords, size_t *regexes);

/* ---- scanning one body ---------------------------------------------------------------------- */

struct bodyscan_limits {
    uint64_t max_decoded; /* stop after this many decoded bytes; 0: 1 MiB */
    uint64_t max_encoded; /* and after this many bytes fed; 0: no limit of its own */
    size_t capture;       /* keep the first this many decoded bytes; 0: none */
    size_t decoder_mem;   /* memory the decoders may allocate; 0: BODYSCAN_DECODER_MEM */
};

enum bodyscan_status {
    BODYSCAN_MORE = 0, /* nothing found yet: feed more */
    BODYSCAN_MATCH,    /* a set matched: bodyscan_match() says which */
    BODYSCAN_DONE,     /* over without a match: the body ended, a limit stopped the scan
                        * (bodyscan_truncated), or it cannot be decoded (bodyscan_error) */
};

struct bodyscan;

/* A scanner for one body with this Content-Encoding (NULL or "": identity; a list such as
 * "gzip, br" is undone from its last coding to its first). sets[0..n_sets) are borrowed and
 * must outlive the scanner; when several match within one piece, the lowest index is reported.
 * An encoding that cannot be undone (unknown, more than BODYSCAN_MAX_CODINGS) gives a scanner
 * that is DONE at once with bodyscan_error() saying why. NULL when out of memory or n_sets is
 * above BODYSCAN_MAX_SETS. */
struct bodyscan *bodyscan_new(const char *content_encoding,
                              const struct bodyscan_patterns *const *sets, size_t n_sets,
                              const struct bodyscan_limits *limits);
void bodyscan_free(struct bodyscan *s);

/* Feeds the next bytes of the body as sent (data borrowed for the call). Once the status is
 * not MORE it stays what it is and further bytes are ignored. */
enum bodyscan_status bodyscan_feed(struct bodyscan *s, const uint8_t *data, size_t len);

/* The body ended: flushes the decoders and matches what is left (`$` may now match at the
 * end). Returns MATCH or DONE. */
enum bodyscan_status bodyscan_end(struct bodyscan *s);

enum bodyscan_status bodyscan_status(const struct bodyscan *s);
/* Index of the set that matched, -1 while none has. */
int bodyscan_match(const struct bodyscan *s);
/* Why the body could not be (wholly) decoded: a static string, or NULL. */
const char *bodyscan_error(const struct bodyscan *s);
/* True when a limit stopped the scan before the end of the body. */
bool bodyscan_truncated(const struct bodyscan *s);
/* Decoded bytes scanned so far, and encoded bytes fed. */
uint64_t bodyscan_decoded(const struct bodyscan *s);
uint64_t bodyscan_encoded(const struct bodyscan *s);
/* The first decoded bytes kept for a capture (borrowed, valid until the next call). */
const uint8_t *bodyscan_captured(const struct bodyscan *s, size_t *len);
/* Bytes the scanner holds now (window, capture, decoders). */
size_t bodyscan_memory(const struct bodyscan *s);

#endif
