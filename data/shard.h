/* Token shards in the llm.c binary layout (DESIGN: Token data).
 *
 * A shard is a header of 256 little-endian int32 followed by the tokens:
 *   header[0] = magic:   20240520 (uint16 tokens) or 20240801 (uint32 tokens)
 *   header[1] = version: 1 with magic 20240520, 7 with magic 20240801
 *   header[2] = number of tokens; the other 253 entries are zero
 * so that shards written by llm.c's preparation scripts (fineweb.py, tinyshakespeare.py) load here
 * and shards written here load in llm.c. Tokens are little-endian; this code assumes a
 * little-endian host (x86-64, aarch64), checked at compile time. */
#ifndef DT_SHARD_H
#define DT_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "util/status.h"

#define DT_SHARD_HEADER_INTS 256
#define DT_SHARD_HEADER_BYTES (DT_SHARD_HEADER_INTS * 4)
#define DT_SHARD_MAGIC_U16 20240520
#define DT_SHARD_VERSION_U16 1
#define DT_SHARD_MAGIC_U32 20240801
#define DT_SHARD_VERSION_U32 7

/* An open shard: the whole file mapped read-only (the page cache shares it between the ranks of
 * a node, and opening costs nothing however large the shard). */
typedef struct dt_shard {
    char *path;      /* owned copy of the path it was opened from */
    int bits;        /* 16 or 32 */
    size_t n_tokens; /* header[2] */
    int magic, version;
    const void *tokens; /* (n_tokens) uint16 or uint32, inside the mapping */
    void *map;          /* the mapping: header and tokens */
    size_t map_bytes;
} dt_shard;

/* Maps and validates a shard. Every defect is DT_ERR_INPUT with one message naming the path, what
 * was expected and what was found: a file shorter than the header, a bad magic, an unknown
 * version, a magic/version mismatch, a negative token count, and a token count that does not
 * match the file size (truncated file, or trailing bytes). A missing or unreadable file is
 * DT_ERR_INPUT too; other system failures (mmap, out of memory) are DT_ERR_RUNTIME.
 * On failure *s is left zeroed (shard_close on it is a no-op). */
dt_status shard_open(dt_shard *s, const char *path);
/* Token i (0 <= i < n_tokens; not checked). */
uint32_t shard_token(const dt_shard *s, size_t i);
/* Unmaps and frees; safe on a zeroed or already closed shard. */
void shard_close(dt_shard *s);

/* Writes n tokens as a shard with bits = 16 or 32 per token. The file is written to "PATH.tmp"
 * and renamed to PATH once complete, so a reader never sees a partial shard. 16-bit shards
 * refuse a token above 65535 (DT_ERR_INPUT naming the index and the value, nothing written);
 * n must fit the header's int32 count. I/O failures are DT_ERR_RUNTIME. */
dt_status shard_write(const char *path, const uint32_t *tokens, size_t n, int bits);

/* A shard written piece by piece (for data preparation, where a shard may hold more tokens than
 * one wants in memory): open, append any number of times, then close to commit (header count
 * patched, file synced, renamed from PATH.tmp to PATH) or abort to remove the temporary file. */
typedef struct dt_shard_writer {
    char *path;     /* final path (owned) */
    char *tmp_path; /* PATH.tmp (owned) */
    void *file;     /* FILE * */
    int bits;
    size_t n_tokens; /* appended so far */
} dt_shard_writer;

dt_status shard_writer_open(dt_shard_writer *w, const char *path, int bits);
/* Same checks as shard_write (token range for 16 bits, int32 count); on error the writer stays
 * usable only for shard_writer_abort. */
dt_status shard_writer_append(dt_shard_writer *w, const uint32_t *tokens, size_t n);
dt_status shard_writer_close(dt_shard_writer *w);
void shard_writer_abort(dt_shard_writer *w);

#endif
