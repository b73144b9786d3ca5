/* All host allocations go through these wrappers (STYLE: SQLite test_malloc), so that a test
 * can make the Nth allocation fail and prove that every init path returns a clean error. */
#ifndef DT_ALLOC_H
#define DT_ALLOC_H

#include <stddef.h>

/* malloc/calloc/free with 64-byte alignment. Return NULL on failure (or injected failure). */
void *dt_malloc(size_t bytes);
void *dt_calloc(size_t count, size_t size);
void *dt_realloc(void *p, size_t bytes); /* unaligned; for growing buffers of small items */
void dt_free(void *p);
char *dt_strdup(const char *s);

/* Test hook: the n-th allocation from now (1-based) and every later one fail; 0 disables. */
void dt_alloc_fail_after(long n);

#endif
