/*
 * redact: a log and filter plugin in C.
 *
 * - log: drops every event whose raw line contains the configured `drop` word, and replaces the
 *   e-mail addresses in the others with `<email>`.
 * - filter `redact_email`: the same replacement for templates: {{ x | redact_email }}.
 */
#include "driftless_plugin.h"

static const char MANIFEST[] =
    "{\"name\":\"redact\",\"version\":\"1.0.0\",\"abi\":1,"
    "\"kinds\":[\"log\",\"filter\"],"
    "\"filters\":[\"redact_email\"],"
    "\"configSchema\":{\"type\":\"object\","
    "\"properties\":{\"drop\":{\"type\":\"string\",\"minLength\":1}},"
    "\"additionalProperties\":false}}";

/* config.drop, or NULL when the policy gives none (then nothing is dropped). */
static dl_buf drop_word;

DRIFTLESS_EXPORT("driftless_manifest")
int64_t driftless_manifest(void) {
    return dl_pack(MANIFEST, sizeof MANIFEST - 1);
}

/* {"config": {"drop": "word"}}: remembers the word. */
DRIFTLESS_EXPORT("driftless_init")
int64_t driftless_init(char *input, int32_t len) {
    dl_span config;
    dl_buf drop = {0};
    int found = 0;
    if (dl_json_member(input, (size_t)len, "config", &config) == 1)
        found = dl_json_string_member(config.ptr, config.len, "drop", &drop);
    free(input);
    if (found == -1) return dl_error("config.drop must be a string");
    dl_buf_free(&drop_word);
    if (found == 1 && drop.len > 0) drop_word = drop;
    else dl_buf_free(&drop);
    return dl_return_static("{}");
}

/* Whether `needle` occurs in `hay` (byte strings that may hold NULs). */
static int contains(const char *hay, size_t hay_len, const char *needle, size_t needle_len) {
    if (needle_len == 0 || needle_len > hay_len) return 0;
    for (size_t i = 0; i + needle_len <= hay_len; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, needle_len) == 0) return 1;
    return 0;
}

static int is_local(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
}

static int is_domain(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '-';
}

/* Appends `text` to `out` with every e-mail address replaced by <email>. An address is the longest
 * run of [A-Za-z0-9._%+-] before an '@' and the longest run of [A-Za-z0-9.-] after it, the latter
 * holding a '.'; dots ending that run (the end of a sentence) are left out of the address. */
static void redact_emails(dl_buf *out, const char *text, size_t len) {
    size_t copied = 0; /* text[0..copied) is already in out */
    size_t i = 0;
    while (i < len) {
        if (text[i] != '@') {
            i++;
            continue;
        }
        size_t start = i, end = i + 1;
        while (start > copied && is_local(text[start - 1])) start--;
        while (end < len && is_domain(text[end])) end++;
        while (end > i + 1 && text[end - 1] == '.') end--;
        if (start < i && end > i + 1 && memchr(text + i + 1, '.', end - i - 1)) {
            dl_buf_put(out, text + copied, start - copied);
            dl_buf_puts(out, "<email>");
            copied = i = end;
        } else {
            i++;
        }
    }
    dl_buf_put(out, text + copied, len - copied);
}

/* {"source": "...", "raw": "...", "fields": {...}} -> {"events": [...]}. The event returned has no
 * "fields", so the input's fields are kept. */
DRIFTLESS_EXPORT("driftless_log")
int64_t driftless_log(char *input, int32_t len) {
    dl_buf raw = {0}, redacted = {0}, out = {0};
    int found = dl_json_string_member(input, (size_t)len, "raw", &raw);
    free(input);
    if (found != 1) {
        dl_buf_free(&raw);
        return dl_error("redact: the event has no raw line");
    }
    if (drop_word.data && contains(raw.data, raw.len, drop_word.data, drop_word.len)) {
        dl_buf_free(&raw);
        return dl_return_static("{\"events\":[]}");
    }
    redact_emails(&redacted, raw.data, raw.len);
    dl_buf_puts(&out, "{\"events\":[{\"raw\":");
    dl_buf_json_string(&out, redacted.data, redacted.len);
    dl_buf_puts(&out, "}]}");
    dl_buf_free(&raw);
    if (redacted.failed) out.failed = 1;
    dl_buf_free(&redacted);
    return dl_return(&out);
}

/* {"filter": "redact_email", "value": "text", "args": []} -> {"value": "redacted text"}. */
DRIFTLESS_EXPORT("driftless_filter")
int64_t driftless_filter(char *input, int32_t len) {
    dl_buf name = {0}, value = {0}, redacted = {0}, out = {0};
    int has_name = dl_json_string_member(input, (size_t)len, "filter", &name);
    int has_value = dl_json_string_member(input, (size_t)len, "value", &value);
    free(input);
    int known = has_name == 1 && strcmp(name.data, "redact_email") == 0 &&
                name.len == strlen("redact_email");
    dl_buf_free(&name);
    if (!known) {
        dl_buf_free(&value);
        return dl_error("redact: unknown filter");
    }
    if (has_value != 1) {
        dl_buf_free(&value);
        return dl_error("redact_email expects a string");
    }
    redact_emails(&redacted, value.data, value.len);
    dl_buf_puts(&out, "{\"value\":");
    dl_buf_json_string(&out, redacted.data, redacted.len);
    dl_buf_putc(&out, '}');
    dl_buf_free(&value);
    if (redacted.failed) out.failed = 1;
    dl_buf_free(&redacted);
    return dl_return(&out);
}
