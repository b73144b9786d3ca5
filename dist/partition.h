/* Balanced partitions of n elements into parts, the one rule every sharded thing in the
 * distributed layer uses (ZeRO shards, reduce-scatter and all-gather parts): part i gets
 * n / parts elements, and the first n % parts parts get one more. Parts are contiguous and in
 * order, sizes differ by at most one, n need not be divisible by parts, and parts may be empty
 * (n < parts). */
#ifndef DT_PARTITION_H
#define DT_PARTITION_H

#include <stddef.h>

/* Offset and count of part i (0 <= i < parts, parts >= 1). */
void dist_partition(size_t n, int parts, int i, size_t *offset, size_t *count);
/* counts[i] for every part i (counts has `parts` entries). */
void dist_partition_counts(size_t *counts, size_t n, int parts);
/* The total of any parts' counts (`parts` entries, balanced or not: a reduce-scatter's), and in
 * *offset where part `which` starts (untouched when which is not in 0 .. parts - 1). */
size_t dist_parts_total(const size_t *counts, int parts, int which, size_t *offset);

#endif
