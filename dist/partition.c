#include "dist/partition.h"

void dist_partition(size_t n, int parts, int i, size_t *offset, size_t *count) {
    size_t p = (size_t)parts, k = (size_t)i;
    size_t base = n / p, extra = n % p;
    /* parts before i: k of them have base elements, min(k, extra) of those one more */
    *offset = k * base + (k < extra ? k : extra);
    *count = base + (k < extra ? 1 : 0);
}

void dist_partition_counts(size_t *counts, size_t n, int parts) {
    for (int i = 0; i < parts; i++) {
        size_t offset;
        dist_partition(n, parts, i, &offset, &counts[i]);
    }
}

size_t dist_parts_total(const size_t *counts, int parts, int which, size_t *offset) {
    size_t n = 0;
    for (int j = 0; j < parts; j++) {
        if (j == which) *offset = n;
        n += counts[j];
    }
    return n;
}
