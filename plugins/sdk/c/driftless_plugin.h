/*
 * driftless_plugin.h: helpers for writing a Driftless plugin in C (plugin ABI 1, see
 * docs/developer/plugins.md). Header-only, needs only the C library (wasi-libc).
 *
 * Include it in exactly one .c file of the plugin: that file gets the `driftless_alloc` export.
 * (Define DRIFTLESS_NO_ALLOC_EXPORT before including it in any other file.) Everything else is
 * `static inline`.
 *
 *   DRIFTLESS_EXPORT("name")        makes a function a module export
 *   dl_pack(ptr, len)               the i64 an entry point returns: (ptr << 32) | len
 *   dl_buf                          a growable byte buffer, always NUL-terminated:
 *                                   dl_buf_put, dl_buf_puts, dl_buf_json_string, dl_buf_free
 *   dl_return(&buf)                 hands a buffer to the host as the call's output
 *   dl_return_static("{}")          returns a string literal as the output
 *   dl_error("message")             returns {"error": "message"}
 *   dl_json_member(...)             finds a member of a JSON object (its raw value)
 *   dl_json_string_member(...)      finds a string member of a JSON object, unescaped
 *
 * An entry point gets (ptr, len) of its JSON input, which it owns: the input was allocated by
 * driftless_alloc (malloc), so the entry point frees it. Since wasm32 pointers are i32, an entry
 * point can take `char *input, int32_t len` and keep the ABI's (i32, i32) -> i64 signature:
 *
 *     DRIFTLESS_EXPORT("driftless_facts")
 *     int64_t driftless_facts(char *input, int32_t len) {
 *         free(input);
 *         return dl_return_static("{\"facts\":{\"hello\":\"world\"},\"metrics\":[]}");
 *     }
 *
 * Build as a WASI reactor:
 *     clang --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -O2 -o plugin.wasm plugin.c
 */
#ifndef DRIFTLESS_PLUGIN_H
#define DRIFTLESS_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DRIFTLESS_EXPORT(name) __attribute__((export_name(name)))

#ifndef DRIFTLESS_NO_ALLOC_EXPORT
/* The host asks for `size` bytes to write a call's input into; 0 means out of memory. */
DRIFTLESS_EXPORT("driftless_alloc")
void *driftless_alloc(int32_t size) {
    if (size < 0) return NULL;
    return malloc(size ? (size_t)size : 1);
}
#endif

/* Packs an output's pointer and length the way entry points return them. */
static inline int64_t dl_pack(const void *ptr, size_t len) {
    return (int64_t)(((uint64_t)(uintptr_t)ptr << 32) | (uint32_t)len);
}

/* ---- Buffers ---------------------------------------------------------------------------- */

/* A growable byte buffer. Zero-initialise it (`dl_buf b = {0};`). After any put, `data` is
 * NUL-terminated (the NUL is not counted in `len`). An allocation failure sets `failed` and makes
 * later puts no-ops, so callers can check once at the end. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
    int failed;
} dl_buf;

/* Makes room for `extra` more bytes plus the terminating NUL; 0 on failure. */
static inline int dl_buf_reserve(dl_buf *b, size_t extra) {
    if (b->failed) return 0;
    if (b->len + extra + 1 <= b->cap) return 1;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1) cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data) {
        b->failed = 1;
        return 0;
    }
    b->data = data;
    b->cap = cap;
    b->data[b->len] = '\0';
    return 1;
}

static inline void dl_buf_put(dl_buf *b, const void *bytes, size_t n) {
    if (!dl_buf_reserve(b, n)) return;
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static inline void dl_buf_putc(dl_buf *b, char c) { dl_buf_put(b, &c, 1); }

static inline void dl_buf_puts(dl_buf *b, const char *s) { dl_buf_put(b, s, strlen(s)); }

static inline void dl_buf_free(dl_buf *b) {
    free(b->data);
    *b = (dl_buf){0};
}

/* Appends `s` (n bytes of UTF-8) as a JSON string, quotes included. Escapes `"`, `\` and the
 * control characters; passes every other byte through, so valid UTF-8 stays valid JSON. */
static inline void dl_buf_json_string(dl_buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    dl_buf_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': dl_buf_puts(b, "\\\""); break;
        case '\\': dl_buf_puts(b, "\\\\"); break;
        case '\n': dl_buf_puts(b, "\\n"); break;
        case '\r': dl_buf_puts(b, "\\r"); break;
        case '\t': dl_buf_puts(b, "\\t"); break;
        case '\b': dl_buf_puts(b, "\\b"); break;
        case '\f': dl_buf_puts(b, "\\f"); break;
        default:
            if (c < 0x20) {
                char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                dl_buf_put(b, esc, sizeof esc);
            } else {
                dl_buf_putc(b, (char)c);
            }
        }
    }
    dl_buf_putc(b, '"');
}

/* ---- Returning output ------------------------------------------------------------------- */

/* The last output handed to the host: it must stay valid until the next call, so it is freed
 * when the next output replaces it. */
static char *dl_output_;

static inline int64_t dl_return_static(const char *json) {
    free(dl_output_);
    dl_output_ = NULL;
    return dl_pack(json, strlen(json));
}

/* Hands `b` to the host as the output (the buffer is taken over and reset). */
static inline int64_t dl_return(dl_buf *b) {
    if (b->failed || !b->data) {
        dl_buf_free(b);
        return dl_return_static("{\"error\":\"out of memory\"}");
    }
    free(dl_output_);
    dl_output_ = b->data;
    int64_t packed = dl_pack(b->data, b->len);
    *b = (dl_buf){0};
    return packed;
}

/* Returns {"error": message}: the host fails the call with that message. */
static inline int64_t dl_error(const char *message) {
    dl_buf b = {0};
    dl_buf_puts(&b, "{\"error\":");
    dl_buf_json_string(&b, message, strlen(message));
    dl_buf_putc(&b, '}');
    return dl_return(&b);
}

/* ---- Reading JSON ----------------------------------------------------------------------- */
/* Just enough to pick members out of the host's input, which is valid JSON. These functions find
 * where values end; they do not validate. */

/* A slice of the input: `len` bytes at `ptr`. */
typedef struct {
    const char *ptr;
    size_t len;
} dl_span;

static inline const char *dl_json_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static inline int dl_hex4(const char *p, const char *end, uint32_t *out) {
    if (end - p < 4) return 0;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

static inline void dl_buf_utf8(dl_buf *b, uint32_t cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    dl_buf_put(b, u, n);
}

/* Decodes the JSON string whose opening quote is at `p`, appending its bytes to `out` (when `out`
 * is not NULL). Handles every escape, \uXXXX included: a surrogate pair becomes one 4-byte UTF-8
 * character, a lone surrogate U+FFFD. Returns the position after the closing quote, NULL if the
 * string is malformed. */
static inline const char *dl_json_unescape(const char *p, const char *end, dl_buf *out) {
    if (p >= end || *p != '"') return NULL;
    if (out) dl_buf_reserve(out, 0); /* an empty string still gets a "" buffer */
    p++;
    while (p < end) {
        const char *run = p; /* copy unescaped runs in one go */
        while (p < end && *p != '"' && *p != '\\') p++;
        if (out) dl_buf_put(out, run, (size_t)(p - run));
        if (p >= end) return NULL;
        if (*p == '"') return p + 1;
        if (++p >= end) return NULL; /* after the backslash */
        char c = *p++;
        char simple = 0;
        switch (c) {
        case '"': simple = '"'; break;
        case '\\': simple = '\\'; break;
        case '/': simple = '/'; break;
        case 'n': simple = '\n'; break;
        case 't': simple = '\t'; break;
        case 'r': simple = '\r'; break;
        case 'b': simple = '\b'; break;
        case 'f': simple = '\f'; break;
        case 'u': {
            uint32_t cp, low;
            if (!dl_hex4(p, end, &cp)) return NULL;
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                /* A high surrogate: combine it with the low one that should follow. */
                if (end - p >= 6 && p[0] == '\\' && p[1] == 'u' && dl_hex4(p + 2, end, &low) &&
                    low >= 0xDC00 && low <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                    p += 6;
                } else {
                    cp = 0xFFFD;
                }
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                cp = 0xFFFD;
            }
            if (out) dl_buf_utf8(out, cp);
            continue;
        }
        default: return NULL;
        }
        if (out) dl_buf_putc(out, simple);
    }
    return NULL;
}

/* Skips the JSON value at `p` (after any whitespace); returns the position after it, NULL if it is
 * malformed. Objects and arrays are skipped by counting brackets outside strings. */
static inline const char *dl_json_skip(const char *p, const char *end) {
    p = dl_json_ws(p, end);
    if (p >= end) return NULL;
    if (*p == '"') return dl_json_unescape(p, end, NULL);
    if (*p == '{' || *p == '[') {
        size_t depth = 0;
        while (p < end) {
            if (*p == '"') {
                p = dl_json_unescape(p, end, NULL);
                if (!p) return NULL;
                continue;
            }
            if (*p == '{' || *p == '[') depth++;
            else if (*p == '}' || *p == ']') {
                if (--depth == 0) return p + 1;
            }
            p++;
        }
        return NULL;
    }
    /* A number, true, false or null: up to the next delimiter. */
    const char *start = p;
    while (p < end && !strchr(",}] \t\r\n", *p)) p++;
    return p > start ? p : NULL;
}

/* Finds the member `key` of the JSON object in `json` (`len` bytes) and sets `*value` to its raw
 * value (e.g. `"a\"b"`, `{...}`, `12`). Returns 1 when found, 0 when absent, -1 when `json` is not
 * an object or is malformed. Members are compared after unescaping their names. */
static inline int dl_json_member(const char *json, size_t len, const char *key, dl_span *value) {
    const char *p = json, *end = json + len;
    size_t key_len = strlen(key);
    p = dl_json_ws(p, end);
    if (p >= end || *p != '{') return -1;
    p = dl_json_ws(p + 1, end);
    if (p < end && *p == '}') return 0;
    while (p < end) {
        dl_buf name = {0};
        p = dl_json_unescape(p, end, &name);
        int match = p && !name.failed && name.len == key_len && memcmp(name.data, key, key_len) == 0;
        dl_buf_free(&name);
        if (!p) return -1;
        p = dl_json_ws(p, end);
        if (p >= end || *p != ':') return -1;
        const char *start = dl_json_ws(p + 1, end);
        p = dl_json_skip(start, end);
        if (!p) return -1;
        if (match) {
            value->ptr = start;
            value->len = (size_t)(p - start);
            return 1;
        }
        p = dl_json_ws(p, end);
        if (p < end && *p == '}') return 0;
        if (p >= end || *p != ',') return -1;
        p = dl_json_ws(p + 1, end);
    }
    return -1;
}

/* Finds the string member `key` of the JSON object in `json` and appends it, unescaped, to `out`
 * (a zeroed buffer; the caller frees it). Returns 1 when found, 0 when absent, -1 when the member
 * is not a string, -2 when `json` is not an object, is malformed, or memory ran out. */
static inline int dl_json_string_member(const char *json, size_t len, const char *key, dl_buf *out) {
    dl_span v;
    int found = dl_json_member(json, len, key, &v);
    if (found != 1) return found == 0 ? 0 : -2;
    if (v.len == 0 || v.ptr[0] != '"') return -1;
    if (!dl_json_unescape(v.ptr, v.ptr + v.len, out) || out->failed) return -2;
    return 1;
}

#endif /* DRIFTLESS_PLUGIN_H */
