#!/usr/bin/env bash
# Writes a deterministic corpus of simple English-like sentences in the fortune format (documents
# separated by lines of "%") to stdout: test data that any machine can make without downloads.
# usage: make_corpus.sh [DOCUMENTS (default 400)]
awk -v docs="${1:-400}" 'BEGIN {
  split("the a one every some", det, " "); split("cat dog bird fish model token layer head", noun, " ");
  split("sees likes trains follows attends predicts", verb, " ");
  s = 12345;
  for (doc = 0; doc < docs; doc++) {
    n = 3 + doc % 5;
    for (i = 0; i < n; i++) {
      s = (s * 1103515245 + 12345) % 2147483648; a = int(s / 65536) % 5 + 1;
      s = (s * 1103515245 + 12345) % 2147483648; b = int(s / 65536) % 8 + 1;
      s = (s * 1103515245 + 12345) % 2147483648; c = int(s / 65536) % 6 + 1;
      s = (s * 1103515245 + 12345) % 2147483648; e = int(s / 65536) % 8 + 1;
      printf "%s %s %s the %s. ", det[a], noun[b], verb[c], noun[e];
    }
    printf "\n%%\n";
  }
}'
