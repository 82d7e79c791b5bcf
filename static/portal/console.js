// The console's keyboard and menu helpers; every page works without them.
//
// - "Menu" (phone widths) opens the navigation in place; without script it is a link to
//   #mainnav, which the stylesheet shows through :target.
// - An open navigation group closes on a click elsewhere or on Escape (the <details> elements
//   share a name, so opening one already closes the others).
// - "/" focuses the search box, as on GitHub or Gmail, unless the person is typing somewhere.
(function () {
  "use strict";

  function openGroups() {
    return document.querySelectorAll("details.navgroup[open]");
  }

  document.addEventListener("click", function (event) {
    const toggle = event.target.closest(".menu-toggle");
    if (toggle) {
      event.preventDefault();
      const nav = document.getElementById(toggle.getAttribute("aria-controls"));
      const open = nav.classList.toggle("open");
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
      return;
    }
    openGroups().forEach(function (details) {
      if (!details.contains(event.target)) {
        details.open = false;
      }
    });
  });

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      openGroups().forEach(function (details) {
        details.open = false;
        if (details.contains(document.activeElement)) {
          details.querySelector("summary").focus();
        }
      });
      return;
    }
    if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    const target = event.target;
    if (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName)) {
      return;
    }
    const search = document.getElementById("site-search");
    if (search) {
      event.preventDefault();
      search.focus();
      search.select();
    }
  });
})();
