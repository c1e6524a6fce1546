-- Argo CD health check for nuclia-token-operator's NucliaPersonalToken, NucliaKbApiKey and NucliaNuaKey
-- (group nuclia.dev): the same script for every kind. It reads only the conditions the operator
-- writes (Ready, Issuing, Stalled, each with observedGeneration) and status.observedGeneration.
--   Healthy      Ready=True for the current generation and no new token due: the Secret holds
--                the current, valid token.
--   Degraded     Stalled=True (InvalidSpec, SecretConflict, UntrustedEndpoint: waits for a person),
--                or Ready=False for a reason the operator cannot get past alone (Nuclia refuses
--                the credential: Unauthorized, Forbidden; NotFound, Invalid, ...: any reason not
--                listed in `retrying` below).
--   Progressing  no status yet, a generation not yet observed, a new token due (Issuing=True),
--                or Ready=False for a failure the operator retries on its own (apiserver or
--                Nuclia unreachable, rate limits, the login Secret not created yet).
-- Only Lua's base library is used: Argo CD opens neither `string` nor `math` for scripts
-- configured in argocd-cm.
local hs = {}

-- Ready=False reasons that the operator resolves without anyone changing anything.
local retrying = {
  NotIssued = true,          -- no token yet: the first issue is under way
  SecretMissing = true,      -- the Secret is being re-created
  SecretEdited = true,       -- the Secret is being repaired
  Expired = true,            -- a new token is being issued
  KubernetesError = true,    -- the apiserver answered with an error: retried
  Transient = true,          -- Nuclia unreachable or 5xx: retried with backoff
  RateLimited = true,        -- Nuclia asked to slow down: retried after its delay
  Malformed = true,          -- an answer that was not Nuclia's (a proxy's page): retried
  CredentialsMissing = true, -- the login Secret (spec.auth.secretRef) does not exist yet
}

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Being deleted: revoking its tokens"
  return hs
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to issue the token"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local ready = condition("Ready")
local observed = obj.status.observedGeneration
if observed == nil and ready ~= nil then
  observed = ready.observedGeneration
end
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local function current(c)
  return generation == nil or c.observedGeneration == nil or c.observedGeneration >= generation
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" and current(stalled) then
  hs.status = "Degraded"
  hs.message = text(stalled, tostring(stalled.reason))
  return hs
end

if ready == nil or not current(ready) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report readiness"
  return hs
end

-- A new token is due (a spec change, a repair, a rotation asked for) and on its way; the one
-- in the Secret, if any, still works meanwhile.
local issuing = condition("Issuing")
if issuing ~= nil and issuing.status == "True" and current(issuing) then
  hs.status = "Progressing"
  hs.message = text(issuing, "Issuing a new token")
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready, "Ready")
  -- The token in the Secret works; say so when the last attempt at the next one failed.
  if issuing ~= nil and issuing.status == "False" and issuing.reason ~= nil
      and issuing.reason ~= "Idle" and current(issuing) then
    hs.message = hs.message .. "; last attempt failed (" .. tostring(issuing.reason) .. "): "
      .. text(issuing, "")
  end
  return hs
end

if ready.status ~= "False" then
  hs.status = "Progressing"
  hs.message = text(ready, "Waiting for the operator to report readiness")
  return hs
end

if ready.reason ~= nil and retrying[ready.reason] then
  hs.status = "Progressing"
  hs.message = text(ready, tostring(ready.reason))
  return hs
end

hs.status = "Degraded"
hs.message = text(ready, tostring(ready.reason))
return hs
