// Filters by campaign, tag and status; a player whose file is not beside the page says so.
// The page works without this script: every card shows and the filter form stays hidden.
(() => {
  "use strict";
  const form = document.getElementById("filters");
  const cards = Array.from(document.querySelectorAll("article.card"));
  const sections = Array.from(document.querySelectorAll("section.campaign"));
  const entries = Array.from(document.querySelectorAll("nav.toc li"));
  function apply() {
    const campaign = form.elements.campaign.value;
    const tag = form.elements.tag ? form.elements.tag.value : "";
    const statuses = new Set(
      Array.from(form.querySelectorAll("input[name=status]:checked"), (box) => box.value));
    let shown = 0;
    for (const card of cards) {
      const show = (!campaign || card.dataset.campaign === campaign) &&
        (!tag || card.dataset.tags.split(" ").includes(tag)) && statuses.has(card.dataset.status);
      card.hidden = !show;
      shown += show;
    }
    for (const section of sections) {
      section.hidden = !section.querySelector("article.card:not([hidden])");
    }
    for (const entry of entries) {
      entry.hidden = Boolean(campaign) && entry.dataset.campaign !== campaign;
    }
    form.elements.shown.value = `${shown} of ${cards.length} jobs shown`;
  }
  function missing(video) {
    const note = document.createElement("div");
    note.className = "novideo";
    note.textContent = `video not found beside this page: ${video.dataset.file}` +
      " (share it with `runner report --bundle DIR`)";
    video.replaceWith(note);
  }
  for (const video of document.querySelectorAll("video")) {
    if (video.error) {
      missing(video);
    } else {
      video.addEventListener("error", () => missing(video), { once: true });
    }
  }
  form.hidden = false;
  form.addEventListener("change", apply);
  apply();
})();
