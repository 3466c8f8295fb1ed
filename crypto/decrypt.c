/* placeholder: written in #5 */
#include "crypto/decrypt.h"
