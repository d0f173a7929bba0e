//! Built-in prompt sets and prompt files.
//!
//! The engine renders each prompt of the mix into request bytes once, then
//! picks `mix[request_index % mix.len()]`, so the order here is the order of
//! requests on the wire.

use std::borrow::Cow;

use thiserror::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PromptSet {
    Short,
    Medium,
    Long,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PromptError {
    #[error("prompt file holds no prompts (one prompt per non-empty line)")]
    Empty,
    #[error("unknown prompt set {0:?} (expected short, medium or long)")]
    UnknownSet(String),
}

impl PromptSet {
    pub const ALL: [PromptSet; 3] = [PromptSet::Short, PromptSet::Medium, PromptSet::Long];

    pub fn parse(s: &str) -> Option<PromptSet> {
        PromptSet::ALL.into_iter().find(|p| p.name() == s)
    }

    /// Parses a comma-separated list such as `short,medium`. Repeating a set
    /// (`short,short,long`) weights it.
    pub fn parse_list(s: &str) -> Result<Vec<PromptSet>, PromptError> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| PromptSet::parse(p).ok_or_else(|| PromptError::UnknownSet(p.to_string())))
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            PromptSet::Short => "short",
            PromptSet::Medium => "medium",
            PromptSet::Long => "long",
        }
    }

    pub fn prompts(self) -> &'static [&'static str] {
        match self {
            PromptSet::Short => SHORT,
            PromptSet::Medium => MEDIUM,
            PromptSet::Long => LONG,
        }
    }
}

impl std::fmt::Display for PromptSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One prompt per non-empty line; surrounding whitespace (and `\r`) is trimmed.
pub fn load_prompt_file(text: &str) -> Result<Vec<String>, PromptError> {
    let prompts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if prompts.is_empty() {
        return Err(PromptError::Empty);
    }
    Ok(prompts)
}

/// Interleaves the sets round-robin: `a[0], b[0], a[1], b[1], …`, each set
/// cycling, for as many rounds as the largest set has prompts. Every prompt
/// appears at least once and each listed set gets an equal share of requests,
/// which a plain concatenation would not give (a long set would dominate).
pub fn prompts(sets: &[PromptSet]) -> Vec<&'static str> {
    let rounds = sets.iter().map(|s| s.prompts().len()).max().unwrap_or(0);
    let mut out = Vec::with_capacity(rounds * sets.len());
    for round in 0..rounds {
        for set in sets {
            let p = set.prompts();
            out.push(p[round % p.len()]);
        }
    }
    out
}

/// The rotation of prompts the engine sends, built-in or from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptMix {
    prompts: Vec<Cow<'static, str>>,
}

impl PromptMix {
    /// `None` when `sets` is empty.
    pub fn from_sets(sets: &[PromptSet]) -> Option<PromptMix> {
        let prompts: Vec<_> = prompts(sets).into_iter().map(Cow::Borrowed).collect();
        (!prompts.is_empty()).then_some(PromptMix { prompts })
    }

    /// Prompts from a file, in file order.
    pub fn from_file(text: &str) -> Result<PromptMix, PromptError> {
        Ok(PromptMix {
            prompts: load_prompt_file(text)?
                .into_iter()
                .map(Cow::Owned)
                .collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    /// Always false: both constructors refuse an empty mix.
    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    /// The prompt for the `request_index`-th request.
    pub fn get(&self, request_index: u64) -> &str {
        &self.prompts[(request_index % self.prompts.len() as u64) as usize]
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.prompts.iter().map(|p| p.as_ref())
    }
}

static SHORT: &[&str] = &[
    "Why is the sky blue?",
    "Explain how a rainbow forms in two sentences.",
    "What is the difference between weather and climate?",
    "Name three uses of a paper clip.",
    "How does a refrigerator keep food cold?",
    "Give me a simple recipe for pancakes.",
    "What causes the seasons on Earth?",
    "Suggest a name for a friendly orange cat.",
];

static MEDIUM: &[&str] = &[
    "I am planning a small vegetable garden on a sunny balcony that gets about six \
     hours of direct light a day. I have room for four large pots and a narrow \
     railing planter. I would like to grow things that are easy for a beginner, \
     useful in everyday cooking and not too thirsty, because I travel for a few \
     days every month. Suggest which plants to put in each container, how often \
     to water them, and one common mistake to avoid with each.",
    "Summarise the following in three bullet points. The town library has decided \
     to extend its opening hours on weekdays until eight in the evening, starting \
     next month. The change follows a survey in which most respondents said they \
     could only visit after work. To pay for the extra staff time, the library will \
     close one hour earlier on Saturdays. A new self-service return machine will \
     also be installed near the entrance, and volunteers will run a homework club \
     for children on Tuesday and Thursday evenings.",
    "Explain to a curious twelve-year-old how a bicycle stays upright while it is \
     moving but falls over when it stops. Use everyday comparisons rather than \
     equations, mention the role of steering and of the rider, and keep the \
     explanation to two short paragraphs. Finish with one simple experiment the \
     child could try safely in a park to see the effect for themselves, and say \
     what they should notice when they try it.",
    "Write a friendly email to a neighbour asking whether they would like to share \
     the cost of hiring a hedge trimmer for a weekend. Mention that the hedge \
     between our gardens has grown over the path, that the hire shop charges a \
     flat fee for Saturday and Sunday, and that I am happy to do most of the \
     cutting if they help to carry the clippings to the green waste bin. Keep the \
     tone warm and relaxed and the email under one hundred and fifty words.",
    "Compare tea and coffee as morning drinks for someone who wants to feel alert \
     without feeling jittery. Cover the typical amount of caffeine in a cup of \
     each, how quickly the effect is usually felt, how long it tends to last, and \
     how the way each drink is prepared changes its strength. End with a short, \
     practical suggestion for someone who currently drinks three large cups of \
     strong coffee before noon and wants to cut down gradually.",
    "A small bakery sells bread, pastries and cakes. On weekdays it bakes about two \
     hundred loaves, but by closing time around thirty are usually left unsold, \
     while the pastries often run out before lunch. The owner wants to reduce \
     waste without disappointing regular customers. Propose a simple plan with \
     three or four concrete steps, explain the reasoning behind each step, and \
     say how the owner could tell after a month whether the plan is working.",
];

static LONG: &[&str] = &[
    "Read the following passage about the water cycle and answer the question at \
     the end.\n\n\
     Water on Earth is constantly on the move. The oceans hold the great majority \
     of it, and every day the sun warms their surface and turns a small fraction of \
     that water into vapour. Lakes, rivers, wet soil and even puddles on a pavement \
     contribute as well. Plants add their share through a process called \
     transpiration: they draw water up from their roots and release it through \
     tiny pores in their leaves, so that a single large tree can return hundreds of \
     litres to the air on a hot summer day. Together, evaporation and transpiration \
     lift an enormous quantity of water into the atmosphere, invisible until \
     conditions change.\n\n\
     As warm, moist air rises, it expands and cools. Cooler air can hold less \
     vapour, so eventually some of the vapour condenses onto microscopic particles \
     of dust, salt or smoke, forming the droplets that make up clouds. A cloud is \
     therefore not a gas but a vast collection of liquid droplets or ice crystals, \
     each far too small to fall quickly. Inside the cloud the droplets collide and \
     merge, or ice crystals grow at the expense of nearby droplets, until some \
     become heavy enough to overcome the rising air that holds them up. They then \
     fall as rain, snow, sleet or hail, depending on the temperature of the air \
     they pass through on the way down.\n\n\
     What happens next depends on where the precipitation lands. Some of it runs \
     off the surface into streams and rivers and returns to the sea within days or \
     weeks. Some soaks into the ground, where it may be taken up by plant roots or \
     may seep slowly downward to join groundwater. Groundwater moves through layers \
     of sand, gravel and porous rock, sometimes for centuries, before it emerges in \
     springs, feeds rivers during dry spells, or is pumped up from wells. In cold \
     regions, snow can accumulate year after year and be compressed into glacial \
     ice, locking water away for thousands of years before it melts and flows \
     onward.\n\n\
     The cycle has no real beginning or end, and the total amount of water involved \
     changes very little over human timescales. What does change is where the water \
     is and in what form. A warmer atmosphere can hold more vapour, which tends to \
     make heavy downpours more intense, while changes in wind patterns can shift \
     where rain falls. Forests, wetlands and healthy soils act like sponges that \
     slow the movement of water, reducing floods after storms and releasing \
     moisture gradually during droughts. Cities, by contrast, cover the ground with \
     roofs and roads, so rain runs off quickly into drains instead of soaking in.\n\n\
     Understanding these pathways helps farmers decide when to irrigate, helps \
     engineers design reservoirs and drainage, and helps communities prepare for \
     both floods and dry seasons.\n\n\
     Question: Using only the passage, explain step by step how a drop of sea water \
     could end up in a well far inland, and name two ways in which human activity \
     can change how quickly water moves through the cycle.",
    "Below are notes from a community meeting about a proposed cycle lane. Summarise \
     the main arguments on each side and suggest a compromise.\n\n\
     The meeting was held in the primary school hall on a Wednesday evening and was \
     attended by around sixty residents, two local councillors and a transport \
     officer from the council. The officer began by presenting the proposal: a \
     protected cycle lane along the full length of Mill Road, running from the \
     railway station to the edge of the town centre, a distance of a little over \
     two kilometres. The lane would be separated from traffic by a low kerb and \
     would replace the parking spaces on the northern side of the road. Bus stops \
     would be redesigned so that cyclists pass behind the shelters rather than \
     between buses and the pavement. The council would pay for the work with a \
     regional grant that must be spent within two years.\n\n\
     Several parents spoke in favour. They said that many children would like to \
     cycle to the secondary school on Mill Road but that their families consider \
     the road too dangerous at rush hour, when lorries and buses share a narrow \
     carriageway with cars. One parent described a near miss involving her son \
     last winter. A retired doctor pointed out that regular cycling improves \
     health and that the town has one of the highest rates of short car journeys \
     in the region. A representative of a cycling club added that similar lanes in \
     neighbouring towns had led to a steady rise in the number of people cycling, \
     including older residents who had not ridden for years.\n\n\
     Shopkeepers on the northern side of Mill Road raised strong objections. They \
     said that many of their customers drive in, stop briefly and leave, and that \
     losing the parking outside their shops could drive those customers to the \
     out-of-town retail park. The owner of a hardware shop said that deliveries \
     would become difficult because vans would have nowhere to stop. Some older \
     residents worried about crossing a cycle lane to reach the bus stops, \
     especially if cyclists travel quickly. Others felt that the money would be \
     better spent on repairing potholes across the whole town rather than on a \
     single road.\n\n\
     The transport officer responded that deliveries could be made in loading bays \
     on side streets at set times, and that surveys in other towns suggested that \
     people arriving on foot or by bike tend to visit shops more often, even if \
     they spend less per visit. She acknowledged that the evidence was mixed and \
     that local conditions matter. One councillor suggested a trial period using \
     temporary barriers, so that the effect on trade and safety could be measured \
     before any permanent construction. The meeting ended with an agreement that \
     the council would publish the traffic and parking surveys and hold a second \
     meeting in three months.\n\n\
     Please give a balanced summary of no more than two hundred words, followed by \
     one compromise proposal that addresses the main concerns of both groups.",
    "Here is a short history of timekeeping. Read it and then answer the question.\n\n\
     For most of human history, people told the time by watching the sky. The \
     rising and setting of the sun divided the day from the night, and the changing \
     position of shadows gave a rough idea of how much of the day had passed. \
     Ancient Egyptians built tall obelisks whose shadows swept across the ground \
     like the hand of a clock, and later developed portable shadow clocks. At \
     night, they tracked the rising of particular stars. These methods worked well \
     enough for societies that organised their lives around daylight, but they \
     failed on cloudy days and could not measure short intervals precisely.\n\n\
     Water clocks offered an alternative. In their simplest form, a vessel with a \
     small hole near the bottom was filled with water, and the falling level \
     against marks on the inside showed how much time had elapsed. Engineers in \
     Greece, China and the Islamic world refined the idea with floats, gears and \
     regulating valves, building elaborate machines that rang bells or moved \
     figures at set hours. Candles with marked rings and sand glasses served \
     similar purposes on a smaller scale, and sand glasses were especially useful \
     at sea, where the motion of a ship would disturb water.\n\n\
     Mechanical clocks appeared in European monasteries and town towers around the \
     end of the thirteenth century. They were driven by falling weights and \
     regulated by a device called an escapement, which released the gear train in \
     small, regular steps. Early mechanical clocks were impressive but not very \
     accurate, often drifting by a quarter of an hour a day. A major improvement \
     came in the seventeenth century when the pendulum was introduced as a \
     regulator. Because a pendulum of a given length swings with a nearly constant \
     period, pendulum clocks could keep time to within a few seconds a day, and \
     minute hands became common.\n\n\
     Accurate time at sea remained a serious problem. To work out a ship's \
     longitude, a navigator needed to know the time at a reference location while \
     observing local noon, but pendulums do not work on a rolling deck. The \
     solution was the marine chronometer, a carefully engineered spring-driven \
     clock that compensated for changes in temperature and motion. Chronometers \
     made long voyages much safer and helped produce far more reliable maps.\n\n\
     In the nineteenth century, railways created a new need: trains running \
     between towns required a shared time, and local solar time differed from \
     place to place. Standard time zones were adopted so that clocks across a \
     region agreed. In the twentieth century, quartz crystals, which vibrate at a \
     very stable frequency when an electric current is applied, made cheap and \
     accurate watches available to almost everyone. Atomic clocks, based on the \
     behaviour of atoms, now keep time so precisely that they would lose less than \
     a second over millions of years, and they underpin satellite navigation and \
     the synchronisation of communication networks.\n\n\
     Question: For each major kind of clock described above, state what physical \
     process it relies on and one limitation that the next development overcame.",
    "The following text describes how bread is made. Read it and explain the \
     purpose of each stage to a beginner who has never baked before.\n\n\
     A basic loaf needs only four ingredients: flour, water, salt and yeast. The \
     baker starts by mixing the flour and water. As soon as the two meet, proteins \
     in the flour begin to link together into a stretchy network called gluten. \
     Salt is added for flavour, but it also tightens the gluten network and slows \
     the yeast slightly, which makes the fermentation easier to control. Yeast is a \
     living organism, a tiny fungus that feeds on sugars in the flour and releases \
     carbon dioxide gas and small amounts of alcohol and flavour compounds.\n\n\
     Once the ingredients are combined, the dough is kneaded. Kneading stretches \
     and folds the dough repeatedly, which organises the gluten into long, strong \
     strands. A well kneaded dough feels smooth and elastic and can be stretched \
     thin enough to let light through without tearing. Some bakers skip most of \
     the kneading and instead give the dough a long rest with a few gentle folds, \
     letting time and water do the same work more slowly.\n\n\
     The dough then rests in a covered bowl for its first rise, often called bulk \
     fermentation. During this stage the yeast produces gas, which is trapped by \
     the gluten network, so the dough grows in size and becomes airy. Flavour \
     develops at the same time: a long, cool fermentation gives a more complex \
     taste than a short, warm one. When the dough has roughly doubled, the baker \
     turns it out, presses out some of the largest bubbles and shapes it into a \
     tight ball or log. Shaping creates surface tension, which helps the loaf hold \
     its form and rise upward rather than spreading sideways.\n\n\
     The shaped loaf is left for a second, shorter rise called proofing. Judging \
     when proofing is complete is one of the harder skills to learn. An \
     under-proofed loaf may burst unevenly in the oven and have a dense crumb, \
     while an over-proofed loaf may collapse because the gluten can no longer hold \
     the gas. A common test is to press the dough gently with a floured finger: if \
     the dent springs back slowly and only partly, the loaf is usually ready.\n\n\
     Just before baking, the top of the loaf is often cut with a sharp blade. \
     These cuts control where the loaf expands in the oven. In the first minutes \
     of baking, the heat makes the gas expand rapidly and the yeast works furiously \
     before it dies, giving a final burst of growth known as oven spring. Many \
     bakers add steam at this point, which keeps the crust soft for longer so the \
     loaf can expand fully. As baking continues, the crust dries and browns, \
     producing the deep flavours and aromas we associate with fresh bread, while \
     the inside sets into a soft crumb. Finally, the loaf must cool on a rack, \
     because the crumb is still finishing its structure as steam escapes.\n\n\
     Question: Describe each stage in one or two sentences, and say what would go \
     wrong if that stage were skipped.",
    "Read the description of how plants make their food and answer the questions \
     that follow.\n\n\
     Plants are able to build their own food from very simple ingredients: carbon \
     dioxide from the air, water from the soil and energy from sunlight. The \
     process is called photosynthesis, and it takes place mainly in the leaves, \
     inside small structures called chloroplasts. Chloroplasts contain a green \
     pigment, chlorophyll, which absorbs red and blue light strongly but reflects \
     much of the green light, which is why most leaves look green to us.\n\n\
     Photosynthesis happens in two connected stages. In the first stage, light \
     energy captured by chlorophyll is used to split water molecules. This \
     releases oxygen, which escapes from the leaf into the air, and it produces \
     short-lived energy carriers inside the chloroplast. In the second stage, \
     which does not need light directly, those energy carriers are used to join \
     carbon dioxide molecules into sugars. The sugars can be used immediately to \
     power the plant's activities, converted into starch for storage, or built \
     into cellulose, the tough material that forms plant cell walls.\n\n\
     Leaves are shaped to make this process efficient. They are usually broad and \
     thin, which gives them a large surface to catch light and a short distance \
     for gases to travel. Their undersides are dotted with tiny pores called \
     stomata, which open to let carbon dioxide in and oxygen out. The same pores, \
     however, also let water vapour escape. On hot, dry days a plant faces a \
     trade-off: keeping the stomata open allows more photosynthesis but risks \
     losing too much water, while closing them saves water but starves the leaf of \
     carbon dioxide. Many plants close their stomata in the hottest part of the \
     day, and some desert plants open them only at night, storing carbon dioxide \
     until the sun returns.\n\n\
     Several factors limit how fast photosynthesis can run. In dim light, the \
     supply of energy is the bottleneck, so brighter light speeds things up. In \
     bright light, the amount of carbon dioxide available may become the limiting \
     factor instead, which is why some commercial greenhouses add extra carbon \
     dioxide to the air. Temperature matters too: the chemical reactions of the \
     second stage rely on enzymes, which work slowly in the cold and stop working \
     properly if they become too hot. A shortage of water or of nutrients such as \
     nitrogen and magnesium, which are needed to make chlorophyll, will also slow \
     the plant down and may turn its leaves yellow.\n\n\
     Photosynthesis matters far beyond the plant itself. Almost all of the food \
     that animals eat can be traced back to sugars made by plants or by algae, and \
     much of the oxygen in the air was released by photosynthesis over hundreds of \
     millions of years.\n\n\
     Questions: Why do leaves usually appear green? What trade-off do stomata \
     create on a hot day? Name three factors that can limit the rate of \
     photosynthesis and explain briefly why each one matters.",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    #[test]
    fn set_sizes_and_lengths() {
        for (set, lo, hi) in [
            (PromptSet::Short, 5, 15),
            (PromptSet::Medium, 60, 120),
            (PromptSet::Long, 400, 800),
        ] {
            let ps = set.prompts();
            assert!(ps.len() >= 5, "{set}: {} prompts", ps.len());
            for p in ps {
                let w = words(p);
                assert!(
                    (lo..=hi).contains(&w),
                    "{set} prompt has {w} words: {p:.40}"
                );
                assert_eq!(p.trim(), *p, "{set} prompt has stray whitespace");
            }
        }
    }

    #[test]
    fn sets_are_clearly_ordered_by_length() {
        let max_words = |s: PromptSet| s.prompts().iter().map(|p| words(p)).max().unwrap();
        let min_words = |s: PromptSet| s.prompts().iter().map(|p| words(p)).min().unwrap();
        assert!(max_words(PromptSet::Short) * 3 < min_words(PromptSet::Medium));
        assert!(max_words(PromptSet::Medium) * 3 < min_words(PromptSet::Long));
    }

    #[test]
    fn prompts_are_distinct() {
        let all: Vec<_> = PromptSet::ALL.iter().flat_map(|s| s.prompts()).collect();
        let mut dedup = all.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), all.len());
    }

    #[test]
    fn parse_sets() {
        for s in PromptSet::ALL {
            assert_eq!(PromptSet::parse(s.name()), Some(s));
        }
        assert_eq!(PromptSet::parse("huge"), None);
        assert_eq!(
            PromptSet::parse_list("short, medium,long,").unwrap(),
            PromptSet::ALL.to_vec()
        );
        assert_eq!(
            PromptSet::parse_list("short,tiny"),
            Err(PromptError::UnknownSet("tiny".into()))
        );
        assert_eq!(PromptSet::parse_list("").unwrap(), vec![]);
    }

    #[test]
    fn prompt_file() {
        let got = load_prompt_file("first prompt\r\n\n   \n  second one  \nthird").unwrap();
        assert_eq!(got, vec!["first prompt", "second one", "third"]);
        assert_eq!(load_prompt_file(""), Err(PromptError::Empty));
        assert_eq!(load_prompt_file("\n \r\n\t\n"), Err(PromptError::Empty));
    }

    #[test]
    fn mix_interleaves_and_cycles() {
        let s = PromptSet::Short.prompts();
        let m = PromptSet::Medium.prompts();
        let mix = prompts(&[PromptSet::Short, PromptSet::Medium]);
        let rounds = s.len().max(m.len());
        assert_eq!(mix.len(), 2 * rounds);
        for r in 0..rounds {
            assert_eq!(mix[2 * r], s[r % s.len()]);
            assert_eq!(mix[2 * r + 1], m[r % m.len()]);
        }
        // Every prompt of every set is present.
        for p in s.iter().chain(m) {
            assert!(mix.contains(p));
        }
        assert_eq!(mix, prompts(&[PromptSet::Short, PromptSet::Medium]));
        assert_eq!(
            prompts(&[PromptSet::Long]),
            PromptSet::Long.prompts().to_vec()
        );
        assert!(prompts(&[]).is_empty());
    }

    #[test]
    fn mix_object_rotates_by_request_index() {
        let sets = [PromptSet::Medium, PromptSet::Short];
        let mix = PromptMix::from_sets(&sets).unwrap();
        let flat = prompts(&sets);
        assert_eq!(mix.len(), flat.len());
        assert!(!mix.is_empty());
        for i in 0..(3 * flat.len() as u64) {
            assert_eq!(mix.get(i), flat[i as usize % flat.len()]);
        }
        assert_eq!(
            mix.get(u64::MAX),
            flat[(u64::MAX % flat.len() as u64) as usize]
        );
        assert!(mix.iter().eq(flat.iter().copied()));
        assert_eq!(PromptMix::from_sets(&[]), None);

        let mix = PromptMix::from_file("a\nb\n").unwrap();
        assert_eq!((mix.get(0), mix.get(1), mix.get(2)), ("a", "b", "a"));
        assert_eq!(PromptMix::from_file("\n"), Err(PromptError::Empty));
    }
}
