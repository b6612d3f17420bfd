// Sluice policy editor (templates/webui/policy_editor.html): marks the lines the validation errors name in the
// Ace editor's gutter, lets keyboard users leave the editor (Escape, then Tab), and switches between the document and the effective policy tabs.
"use strict";
window.addEventListener("load", () => {
  const marks = JSON.parse(document.getElementById("policy-marks").textContent || "null") || [];
  const widget = document.querySelector(".django-ace-widget");
  const editor = widget && widget.editor;
  if (editor) {
    // Tab indents inside Ace, which would trap a keyboard user. Ace's keyboard accessibility mode: Escape leaves the
    // text for the editor's box, from where Tab moves on (and Shift+Tab back); Enter on the box edits again.
    editor.setOption("enableKeyboardAccessibility", true);
  }
  if (editor && marks.length) {
    editor.getSession().setAnnotations(marks.map((m) => ({ row: m.row, column: m.column, text: m.text, type: "error" })));
    editor.gotoLine(marks[0].row + 1, marks[0].column, true);
  }
  const tabs = Array.from(document.querySelectorAll("[role=tab]"));
  const show = (tab) => {
    for (const other of tabs) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      document.getElementById(other.getAttribute("aria-controls")).hidden = !selected;
    }
  };
  for (const tab of tabs) {
    tab.addEventListener("click", (event) => { event.preventDefault(); show(tab); });
  }
  const wanted = tabs.find((tab) => `#${tab.getAttribute("aria-controls")}` === window.location.hash);
  if (tabs.length) show(wanted || tabs[0]);
  if (new URLSearchParams(window.location.search).has("operation") && !wanted && tabs[1]) show(tabs[1]);
});
