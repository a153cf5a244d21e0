// The printable document's Print button (templates/ui/print.html): the browser's print
// dialog, which prints the sheet or saves it as PDF.
document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("[data-xrm-print]")) {
    button.addEventListener("click", () => window.print());
  }
});
