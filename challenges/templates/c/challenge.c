/* {{NAME}}: scaffolded challenge (ABI v1, C). Build: validator-node challenge build . */
#include "challenge.h"

static const char DESCRIBE[] = "{\"name\":\"{{NAME}}\",\"abi\":1}";

CHALLENGE_EXPORT("describe") i64 describe(void) { return pack_output(DESCRIBE, sizeof(DESCRIBE) - 1); }

/* Share of positions where the submission repeats the task byte; -1 for an empty submission.
 * Optional, instead of one fixed task: draw fresh task instances per evaluation from platform.seed,
 * as challenges/templates/seeded/ does (docs/challenge-authors.md, "Fresh tasks from platform.seed"). */
CHALLENGE_EVALUATE(task, tl, sub, sl) {
    if (sl == 0) return -1;
    u32 n = tl < sl ? tl : sl, same = 0;
    for (u32 i = 0; i < n; i++) same += task[i] == sub[i];
    u32 m = tl > sl ? tl : sl;
    return SCORE_ONE * (i64)same / (i64)m;
}
