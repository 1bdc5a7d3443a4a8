-- SPDX-License-Identifier: BSD-2-Clause
-- manpage.lua -- pandoc filter for the man pages built from docs/*.md.
-- Tables become definition lists (the first cell is the term; every other
-- cell a paragraph led by its column's heading), which read well at any
-- terminal width where tbl tables overflow; and the NAME section is plain
-- text (no font changes), as whatis/lexgrog expect.

local function cell_blocks(cell)
  return cell.contents or cell
end

function Table(tbl)
  local headings = {}
  if tbl.head and tbl.head.rows and #tbl.head.rows > 0 then
    for i, cell in ipairs(tbl.head.rows[1].cells) do
      headings[i] = pandoc.utils.stringify(cell_blocks(cell))
    end
  end
  local items = {}
  for _, body in ipairs(tbl.bodies) do
    for _, row in ipairs(body.body) do
      local term = pandoc.utils.blocks_to_inlines(cell_blocks(row.cells[1]))
      local paras = {}
      for i = 2, #row.cells do
        local inl = pandoc.utils.blocks_to_inlines(cell_blocks(row.cells[i]))
        local lead = {}
        if headings[i] and headings[i] ~= "" then
          lead = {pandoc.Emph(pandoc.Inlines(headings[i])), pandoc.Str(":"), pandoc.Space()}
        end
        local content = pandoc.List(lead)
        content:extend(inl)
        table.insert(paras, pandoc.Para(content))
      end
      table.insert(items, {term, {paras}})
    end
  end
  return pandoc.DefinitionList(items)
end

function Pandoc(doc)
  local in_name = false
  for i, blk in ipairs(doc.blocks) do
    if blk.t == "Header" then
      in_name = pandoc.utils.stringify(blk) == "NAME"
    elseif in_name and (blk.t == "Para" or blk.t == "Plain") then
      doc.blocks[i] = pandoc.walk_block(blk, {
        Code = function(c) return pandoc.Str(c.text) end,
      })
    end
  end
  return doc
end
