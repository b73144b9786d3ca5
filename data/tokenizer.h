/* The byte-level tokenizer: token = byte value 0..255, plus DT_TOKEN_EOT = 256, the end-of-text
 * token appended after each document. The vocabulary is DT_BYTE_VOCAB = 257 ids (a model config
 * may round its vocab_size up; ids above 256 then never occur in the data). */
#ifndef DT_TOKENIZER_H
#define DT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "util/status.h"

#define DT_TOKEN_EOT 256
#define DT_BYTE_VOCAB 257

/* tokens (n) = the n bytes, one token each. Returns n, the number of tokens written. */
size_t tokenizer_encode(uint32_t *tokens /* (n) */, const uint8_t *bytes, size_t n);
/* bytes = the text of n tokens. EOT decodes to nothing (a document boundary carries no text, so
 * decode(encode(doc) + EOT) == doc); callers that display several documents print their own
 * separator where they see DT_TOKEN_EOT. bytes must hold n bytes; *n_bytes receives the count
 * written. A token above 256 is DT_ERR_INPUT naming its index and value. */
dt_status tokenizer_decode(uint8_t *bytes /* (n) */, size_t *n_bytes, const uint32_t *tokens,
                           size_t n);

#endif
