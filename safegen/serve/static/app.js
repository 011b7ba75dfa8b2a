// The safegen web page: one form, one call to /v1/images/generations, the verdict beside each image.
// Everything the server sends is shown with textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function loadInfo() {
  const res = await fetch("/v1/info");
  info = await res.json();
  const model = info.models.find((m) => m.task === "text-to-image");
  $("model-line").textContent = model
    ? `model ${model.id} · safe encoder ${model.safe_encoder || "none"} · classifier ${info.classifier || "none"} · flagged images: ${info.on_unsafe}`
    : "this server does not generate images";
  const sizes = new Set();
  const def = parseInt((info.default_size || "512x512").split("x")[0], 10);
  for (const side of [def, info.max_size, def / 2]) {
    if (side >= 8 && side <= info.max_size && side % 8 === 0) sizes.add(side);
  }
  for (const side of [...sizes].sort((a, b) => a - b)) {
    const opt = document.createElement("option");
    opt.value = `${side}x${side}`;
    opt.textContent = `${side}×${side}`;
    if (side === def) opt.selected = true;
    $("size").appendChild(opt);
  }
  $("compare-label").hidden = !info.allow_compare;
  $("key-row").hidden = !info.auth_required;
  $("generate").disabled = !model;
}

function verdictText(item) {
  const s = item.safety;
  const score = s ? ` (unsafe score ${s.score.toFixed(2)}, ${s.classifier})` : "";
  switch (item.decision) {
    case "pass": return [s ? "passed the check" + score : "not checked", "pass"];
    case "keep": return ["flagged, shown as is" + score, "flagged"];
    case "blur": return ["flagged and blurred" + score, "flagged"];
    case "black": return ["flagged and blacked out" + score, "flagged"];
    case "block": return ["flagged and withheld" + score, "block"];
    default: return [item.decision + score, "flagged"];
  }
}

function card(title, item) {
  const fig = document.createElement("figure");
  fig.dataset.variant = title;
  if (item.b64_json) {
    const img = document.createElement("img");
    img.alt = `${title} image, seed ${item.seed}`;
    img.src = "data:image/png;base64," + item.b64_json;
    fig.appendChild(img);
  } else {
    const box = document.createElement("div");
    box.className = "blocked";
    box.textContent = "withheld";
    fig.appendChild(box);
  }
  const cap = document.createElement("figcaption");
  const head = document.createElement("div");
  head.textContent = `${title} · seed ${item.seed}`;
  const [text, cls] = verdictText(item);
  const verdict = document.createElement("div");
  verdict.className = "verdict " + cls;
  verdict.textContent = text;
  cap.append(head, verdict);
  fig.appendChild(cap);
  return fig;
}

async function generate(event) {
  event.preventDefault();
  const body = { prompt: $("prompt").value, n: 1, size: $("size").value, response_format: "b64_json" };
  const seed = $("seed").value.trim();
  if (seed !== "") body.seed = parseInt(seed, 10);
  if (info && info.allow_compare && $("compare").checked) body.compare = true;
  $("generate").disabled = true;
  $("status").className = "muted";
  $("status").textContent = "generating…";
  try {
    const res = await fetch("/v1/images/generations", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    const out = await res.json();
    if (!res.ok) {
      const retry = res.headers.get("Retry-After");
      throw new Error(out.error ? out.error.message + (retry ? ` (retry in ${retry} s)` : "") : res.statusText);
    }
    const cards = $("cards");
    cards.replaceChildren();
    for (const item of out.data) {
      if (item.original) cards.appendChild(card("original", item.original));
      cards.appendChild(card("safe", item));
    }
    $("details").textContent = `seed ${out.seed} · ${out.size} · ${out.steps} steps · guidance ${out.guidance} · safe encoder ${out.safe_encoder || "none"}`;
    $("result").hidden = false;
    $("status").textContent = "done";
  } catch (err) {
    $("status").className = "error";
    $("status").textContent = "error: " + err.message;
  } finally {
    $("generate").disabled = false;
  }
}

$("gen-form").addEventListener("submit", generate);
loadInfo().catch((err) => { $("model-line").textContent = "could not reach the server: " + err.message; });
