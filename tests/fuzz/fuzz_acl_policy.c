/* libFuzzer target: the policy parser and compiler never crash or leak on
 * any text; a policy that compiles answers a decision. */
#include <stdlib.h>
#include <string.h>

#include "access_ctl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    sr_acl_policy_t *p = NULL;
    if (sr_acl_compile_text("fuzz.conf", text, &p) == SR_OK) {
        sr_acl_request_t r = {.server = "db1", .account = "alice", .source = "10.0.0.1", .service = "pg", .at = 1};
        sr_acl_decision_t d;
        sr_acl_decide(p, &r, &d);
        sr_acl_policy_free(p);
    }
    free(text);
    return 0;
}
