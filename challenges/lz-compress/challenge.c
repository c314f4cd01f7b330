/* lz-compress: lossless compression challenge (ABI v1, C, built with `zig cc`).
 *
 * Task: the bytes to compress (from the manifest / decided block). Submission: a token stream that
 * must decompress to exactly the task:
 *   byte b < 0x80        literal run: the next b+1 bytes are copied
 *   byte b >= 0x80       match: length (b & 0x7f) + 3, then a u16 LE distance d (1 <= d <= bytes so far);
 *                        copies byte by byte from d back (overlapping copies allowed)
 * Score: SCORE_ONE * (task_len - sub_len) / task_len for a correct stream shorter than the task, else 0.
 * Errors: -1 malformed stream, -2 output differs from the task, -3 empty task.
 */
#include "challenge.h"

static const char DESCRIBE[] =
    "{\"name\":\"lz-compress\",\"abi\":1,\"version\":1,\"task\":\"bytes to compress\","
    "\"submission\":\"lz token stream\",\"score\":\"1e9*(1-len(sub)/len(task))\"}";

CHALLENGE_EXPORT("describe") i64 describe(void) { return pack_output(DESCRIBE, sizeof(DESCRIBE) - 1); }

CHALLENGE_EVALUATE(task, tl, sub, sl) {
    if (tl == 0) return -3;
    u32 out = 0, i = 0;
    while (i < sl) {
        u32 b = sub[i++];
        if (b < 0x80) {
            u32 n = b + 1;
            if (n > sl - i) return -1;
            if (n > tl - out) return -2;
            for (u32 k = 0; k < n; k++)
                if (sub[i + k] != task[out + k]) return -2;
            out += n;
            i += n;
        } else {
            u32 n = (b & 0x7f) + 3;
            if (sl - i < 2) return -1;
            u32 d = rd_u16(sub + i);
            i += 2;
            if (d == 0 || d > out) return -1;
            if (n > tl - out) return -2;
            /* the decoded prefix equals task[0..out], so a match copies from the task itself */
            for (u32 k = 0; k < n; k++)
                if (task[out + k - d] != task[out + k]) return -2;
            out += n;
        }
    }
    if (out != tl) return -2;
    if (sl >= tl) return 0;
    return (SCORE_ONE * (i64)(tl - sl)) / (i64)tl;
}
