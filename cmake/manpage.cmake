# SPDX-License-Identifier: BSD-2-Clause
# manpage.cmake -- turns one of docs/*.md into a roff man page with pandoc.
#   cmake -DPANDOC=... -DIN=docs/nfsd.md -DOUT=kcont-nfsd.8 -DNAME=kcont-nfsd
#         -DSECTION=8 -DVERSION=0.1.0 -P manpage.cmake
# The document's first line, "# TITLE(S) — what it is", becomes the page's
# title and, when the document has no NAME section, its NAME line; its
# "##" sections become the page's sections.
file(READ ${IN} text)
if(NOT text MATCHES "^# ([^\n]*)\n")
  message(FATAL_ERROR "${IN}: the first line must be '# TITLE(S) — what it is'")
endif()
set(title_line "${CMAKE_MATCH_1}")
string(REGEX REPLACE "^# [^\n]*\n" "" body "${text}")
if(NOT body MATCHES "(^|\n)## NAME\n")
  string(FIND "${title_line}" "— " dash)
  if(dash LESS 0)
    message(FATAL_ERROR "${IN}: no NAME section and no '— what it is' in its title")
  endif()
  math(EXPR from "${dash} + 4")  # "— " is 4 bytes in UTF-8
  string(SUBSTRING "${title_line}" ${from} -1 what)
  set(body "## NAME\n\n${NAME} - ${what}\n${body}")
endif()
string(TOUPPER "${NAME}" upper)
set(tmp ${OUT}.md)
file(WRITE ${tmp} "${body}")
execute_process(
  COMMAND ${PANDOC} -s -f markdown -t man --columns=64 --shift-heading-level-by=-1 -M title=${upper}
          -M section=${SECTION} -M header=kcont -M "footer=kcont ${VERSION}"
          --lua-filter=${CMAKE_CURRENT_LIST_DIR}/manpage.lua -o ${OUT} ${tmp}
  RESULT_VARIABLE rc)
file(REMOVE ${tmp})
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "pandoc failed on ${IN}")
endif()
