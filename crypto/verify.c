/* placeholder: written in #5 */
#include "crypto/verify.h"
