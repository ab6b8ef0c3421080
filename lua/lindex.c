/* PLACEHOLDER: replaced by the real implementation in this session */
#include "ltocha.h"
const luaL_Reg tcl_index_funcs[] = {{NULL, NULL}};
const luaL_Reg tcl_index_methods[] = {{NULL, NULL}};
