#include "data/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/alloc.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "token shards are little-endian and are mapped without byte swapping");

/* Explicit little-endian decoding of the header keeps the checks independent of alignment. */
static int32_t read_le32(const unsigned char *p) {
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24);
}

/* Missing and unreadable files are the user's input; anything else is the system failing. */
static dt_status errno_status(int err) {
    return (err == ENOENT || err == ENOTDIR || err == EACCES || err == EISDIR || err == ELOOP)
               ? DT_ERR_INPUT
               : DT_ERR_RUNTIME;
}

static dt_status check_header(const char *path, const unsigned char *h, size_t file_bytes,
                              int *bits, size_t *n_tokens) {
    int32_t magic = read_le32(h), version = read_le32(h + 4), count = read_le32(h + 8);
    int want_version;
    if (magic == DT_SHARD_MAGIC_U16) {
        *bits = 16;
        want_version = DT_SHARD_VERSION_U16;
    } else if (magic == DT_SHARD_MAGIC_U32) {
        *bits = 32;
        want_version = DT_SHARD_VERSION_U32;
    } else {
        dt_error("%s: bad magic %d in the shard header, expected %d (uint16 tokens) or %d (uint32 "
                 "tokens); not an llm.c token shard",
                 path, (int)magic, DT_SHARD_MAGIC_U16, DT_SHARD_MAGIC_U32);
        return DT_ERR_INPUT;
    }
    if (version != DT_SHARD_VERSION_U16 && version != DT_SHARD_VERSION_U32) {
        dt_error("%s: unknown shard version %d, expected %d (with magic %d)", path, (int)version,
                 want_version, (int)magic);
        return DT_ERR_INPUT;
    }
    if (version != want_version) {
        dt_error("%s: shard version %d does not match magic %d, which requires version %d", path,
                 (int)version, (int)magic, want_version);
        return DT_ERR_INPUT;
    }
    if (count < 0) {
        dt_error("%s: negative token count %d in the shard header", path, (int)count);
        return DT_ERR_INPUT;
    }
    size_t tok_bytes = (size_t)(*bits / 8);
    size_t want = DT_SHARD_HEADER_BYTES + (size_t)count * tok_bytes;
    if (file_bytes != want) {
        dt_error("%s: the header says %d uint%d tokens, i.e. a file of %zu bytes, but the file has "
                 "%zu bytes (%s)",
                 path, (int)count, *bits, want, file_bytes,
                 file_bytes < want ? "truncated" : "trailing bytes after the tokens");
        return DT_ERR_INPUT;
    }
    *n_tokens = (size_t)count;
    return DT_OK;
}

dt_status shard_open(dt_shard *s, const char *path) {
    memset(s, 0, sizeof *s);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        dt_error("%s: cannot open token shard: %s", path, strerror(err));
        return errno_status(err);
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        dt_error("%s: cannot stat token shard: %s", path, strerror(err));
        close(fd);
        return DT_ERR_RUNTIME;
    }
    if (!S_ISREG(st.st_mode)) {
        dt_error("%s: not a regular file, expected a token shard", path);
        close(fd);
        return DT_ERR_INPUT;
    }
    size_t bytes = (size_t)st.st_size;
    if (bytes < DT_SHARD_HEADER_BYTES) {
        dt_error("%s: file is %zu bytes, shorter than the %d-byte token shard header", path, bytes,
                 DT_SHARD_HEADER_BYTES);
        close(fd);
        return DT_ERR_INPUT;
    }
    void *map = mmap(NULL, bytes, PROT_READ, MAP_SHARED, fd, 0);
    int map_err = errno;
    close(fd); /* the mapping keeps the file alive */
    if (map == MAP_FAILED) {
        dt_error("%s: cannot map token shard (%zu bytes): %s", path, bytes, strerror(map_err));
        return DT_ERR_RUNTIME;
    }
    int bits = 0;
    size_t n = 0;
    dt_status st2 = check_header(path, map, bytes, &bits, &n);
    if (st2 != DT_OK) {
        munmap(map, bytes);
        return st2;
    }
    char *copy = dt_strdup(path);
    if (!copy) {
        dt_error("%s: out of memory opening token shard", path);
        munmap(map, bytes);
        return DT_ERR_RUNTIME;
    }
    /* Samples are read in order within a window but windows are drawn at random. */
    madvise(map, bytes, MADV_RANDOM);
    const unsigned char *h = map;
    s->path = copy;
    s->bits = bits;
    s->n_tokens = n;
    s->magic = read_le32(h);
    s->version = read_le32(h + 4);
    s->tokens = h + DT_SHARD_HEADER_BYTES;
    s->map = map;
    s->map_bytes = bytes;
    return DT_OK;
}

uint32_t shard_token(const dt_shard *s, size_t i) {
    /* The token section starts 1024 bytes into a page-aligned mapping, so both views align. */
    return s->bits == 16 ? ((const uint16_t *)s->tokens)[i] : ((const uint32_t *)s->tokens)[i];
}

void shard_close(dt_shard *s) {
    if (s->map) munmap(s->map, s->map_bytes);
    dt_free(s->path);
    memset(s, 0, sizeof *s);
}

/* ---- writing ---- */

static void put_le32(unsigned char *p, int32_t v) {
    uint32_t u = (uint32_t)v;
    p[0] = (unsigned char)u;
    p[1] = (unsigned char)(u >> 8);
    p[2] = (unsigned char)(u >> 16);
    p[3] = (unsigned char)(u >> 24);
}

static dt_status write_header(dt_shard_writer *w) {
    unsigned char h[DT_SHARD_HEADER_BYTES];
    memset(h, 0, sizeof h);
    put_le32(h, w->bits == 16 ? DT_SHARD_MAGIC_U16 : DT_SHARD_MAGIC_U32);
    put_le32(h + 4, w->bits == 16 ? DT_SHARD_VERSION_U16 : DT_SHARD_VERSION_U32);
    put_le32(h + 8, (int32_t)w->n_tokens);
    FILE *f = w->file;
    if (fseek(f, 0, SEEK_SET) != 0 || fwrite(h, 1, sizeof h, f) != sizeof h) {
        dt_error("%s: cannot write the shard header: %s", w->tmp_path, strerror(errno));
        return DT_ERR_RUNTIME;
    }
    return DT_OK;
}

dt_status shard_writer_open(dt_shard_writer *w, const char *path, int bits) {
    memset(w, 0, sizeof *w);
    if (bits != 16 && bits != 32) {
        dt_error("%s: token width %d bits, expected 16 or 32", path, bits);
        return DT_ERR_INPUT;
    }
    size_t len = strlen(path);
    w->path = dt_strdup(path);
    w->tmp_path = dt_malloc(len + 5);
    if (!w->path || !w->tmp_path) {
        dt_error("%s: out of memory opening a shard for writing", path);
        shard_writer_abort(w);
        return DT_ERR_RUNTIME;
    }
    memcpy(w->tmp_path, path, len);
    memcpy(w->tmp_path + len, ".tmp", 5);
    w->bits = bits;
    FILE *f = fopen(w->tmp_path, "wb");
    if (!f) {
        int err = errno;
        dt_error("%s: cannot create shard file: %s", w->tmp_path, strerror(err));
        shard_writer_abort(w);
        return errno_status(err);
    }
    w->file = f;
    dt_status st = write_header(w); /* count 0 for now; patched by close */
    if (st != DT_OK) shard_writer_abort(w);
    return st;
}

dt_status shard_writer_append(dt_shard_writer *w, const uint32_t *tokens, size_t n) {
    if (n > (size_t)INT32_MAX - w->n_tokens) {
        dt_error("%s: more than %d tokens, the most one shard's int32 header count can hold; "
                 "use smaller shards",
                 w->path, INT32_MAX);
        return DT_ERR_INPUT;
    }
    if (w->bits == 32) {
        if (fwrite(tokens, sizeof *tokens, n, w->file) != n) goto io_error;
    } else {
        uint16_t buf[4096];
        for (size_t i = 0; i < n;) {
            size_t m = n - i < 4096 ? n - i : 4096;
            for (size_t j = 0; j < m; j++) {
                if (tokens[i + j] > UINT16_MAX) {
                    dt_error("%s: token %zu has id %u, which does not fit a uint16 shard (max "
                             "65535); write 32-bit shards",
                             w->path, w->n_tokens + i + j, tokens[i + j]);
                    return DT_ERR_INPUT;
                }
                buf[j] = (uint16_t)tokens[i + j];
            }
            if (fwrite(buf, sizeof *buf, m, w->file) != m) goto io_error;
            i += m;
        }
    }
    w->n_tokens += n;
    return DT_OK;
io_error:
    dt_error("%s: cannot write tokens: %s", w->tmp_path, strerror(errno));
    return DT_ERR_RUNTIME;
}

dt_status shard_writer_close(dt_shard_writer *w) {
    dt_status st = write_header(w);
    if (st != DT_OK) goto fail;
    FILE *f = w->file;
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        dt_error("%s: cannot flush shard: %s", w->tmp_path, strerror(errno));
        st = DT_ERR_RUNTIME;
        goto fail;
    }
    w->file = NULL;
    if (fclose(f) != 0) {
        dt_error("%s: cannot close shard: %s", w->tmp_path, strerror(errno));
        st = DT_ERR_RUNTIME;
        goto fail;
    }
    if (rename(w->tmp_path, w->path) != 0) {
        dt_error("%s: cannot rename to %s: %s", w->tmp_path, w->path, strerror(errno));
        st = DT_ERR_RUNTIME;
        goto fail;
    }
    dt_free(w->path);
    dt_free(w->tmp_path);
    memset(w, 0, sizeof *w);
    return DT_OK;
fail:
    shard_writer_abort(w);
    return st;
}

void shard_writer_abort(dt_shard_writer *w) {
    if (w->file) fclose(w->file);
    if (w->tmp_path) unlink(w->tmp_path);
    dt_free(w->path);
    dt_free(w->tmp_path);
    memset(w, 0, sizeof *w);
}

dt_status shard_write(const char *path, const uint32_t *tokens, size_t n, int bits) {
    /* Range checks first, so that a refused shard leaves no temporary file behind. */
    if (bits == 16) {
        for (size_t i = 0; i < n; i++) {
            if (tokens[i] > UINT16_MAX) {
                dt_error("%s: token %zu has id %u, which does not fit a uint16 shard (max 65535); "
                         "write 32-bit shards",
                         path, i, tokens[i]);
                return DT_ERR_INPUT;
            }
        }
    }
    if (n > (size_t)INT32_MAX) {
        dt_error("%s: %zu tokens, more than the %d one shard's int32 header count can hold", path,
                 n, INT32_MAX);
        return DT_ERR_INPUT;
    }
    dt_shard_writer w;
    DT_TRY(shard_writer_open(&w, path, bits));
    dt_status st = shard_writer_append(&w, tokens, n);
    if (st != DT_OK) {
        shard_writer_abort(&w);
        return st;
    }
    return shard_writer_close(&w);
}
