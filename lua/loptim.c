/* PLACEHOLDER: replaced by the real implementation in this session */
#include "ltocha.h"
const luaL_Reg tcl_optim_funcs[] = {{NULL, NULL}};
