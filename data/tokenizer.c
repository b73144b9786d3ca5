#include "data/tokenizer.h"

size_t tokenizer_encode(uint32_t *tokens, const uint8_t *bytes, size_t n) {
    for (size_t i = 0; i < n; i++) tokens[i] = bytes[i];
    return n;
}

dt_status tokenizer_decode(uint8_t *bytes, size_t *n_bytes, const uint32_t *tokens, size_t n) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t t = tokens[i];
        if (t < 256) {
            bytes[m++] = (uint8_t)t;
        } else if (t != DT_TOKEN_EOT) {
            *n_bytes = m;
            dt_error("byte tokenizer: token %zu has id %u, expected 0..255 or %d (end of text)", i,
                     t, DT_TOKEN_EOT);
            return DT_ERR_INPUT;
        }
    }
    *n_bytes = m;
    return DT_OK;
}
