"""The clinical fact base behind the bundled synthetic corpus.

Plain tables of textbook-level associations, written for this project, plus
the :class:`Fact` record they are flattened into. Nothing here is meant as
clinical guidance: the facts are simplified so that each question built from
them has exactly one defensible answer.

Conventions that the generator in :mod:`pure_transformer.bundled.synthetic`
relies on:

* Within one relation every value is unique, so a value that is true for one
  subject is never true for another and can serve as a distractor.
* Where two real-world answers would both be defensible (several NSAIDs for
  gout, steroids for many diseases), the weaker fact is left out (``None``)
  rather than kept ambiguous.
* Values read naturally inside a sentence ("a low serum ceruloplasmin level");
  the generator strips a leading article when it turns a value into an option.
* Presentations avoid words of the disease's own name and of its other values,
  so a question cannot be answered by matching words.

The general-knowledge tables for the non-medical stand-in text live in
:mod:`pure_transformer.bundled.general_text`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Relation(Enum):
    """What a fact says about its subject; the value is the enum's value type."""

    PRESENTATION = "presentation"  # disease -> classic presentation
    TREATMENT = "treatment"  # disease -> first-line treatment
    FINDING = "finding"  # disease -> key laboratory or test finding
    ORGANISM = "organism"  # infection -> causative organism
    DRUG_CLASS = "drug class"  # drug -> class
    MECHANISM = "mechanism"  # drug -> mechanism of action
    ADVERSE_EFFECT = "adverse effect"  # drug -> characteristic adverse effect


@dataclass(frozen=True)
class Fact:
    """One subject-relation-value triple.

    ``category`` names the type of the value; distractors for a question about
    this fact are drawn from other values of the same category.
    """

    relation: Relation
    subject: str
    value: str
    category: str


# Age bands used to make vignettes plausible (a toddler with lead poisoning,
# an older adult with giant cell arteritis).
INFANT, TODDLER, CHILD, YOUNG, ADULT, OLDER = "infant", "toddler", "child", "young", "adult", "older"

# disease, age band, classic presentation, first-line treatment, key finding
DISEASES: tuple[tuple[str, str, str, str | None, str | None], ...] = (
    ("Graves disease", ADULT, "heat intolerance, weight loss, palpitations, a diffuse goiter and bulging eyes",
     "methimazole", "a suppressed TSH with high free T4 and TSH-receptor antibodies"),
    ("Hashimoto thyroiditis", ADULT, "fatigue, cold intolerance, weight gain, constipation and dry skin",
     "levothyroxine", "an elevated TSH with low free T4 and anti-thyroid peroxidase antibodies"),
    ("type 2 diabetes mellitus", ADULT, "increased thirst, frequent urination and blurred vision in an overweight patient",
     "metformin", "a hemoglobin A1c of 6.5% or higher"),
    ("primary adrenal insufficiency", ADULT, "fatigue, salt craving, weight loss and darkening of the skin creases",
     "hydrocortisone with fludrocortisone", "a low morning cortisol with a high ACTH level"),
    ("Cushing disease", ADULT, "central obesity, purple abdominal striae, a rounded face and proximal muscle weakness",
     "transsphenoidal resection of the pituitary adenoma", "cortisol that fails to suppress after low-dose dexamethasone"),
    ("primary hyperaldosteronism", ADULT, "resistant high blood pressure with muscle cramps",
     "spironolactone", "a high aldosterone with suppressed plasma renin activity"),
    ("pheochromocytoma", ADULT, "episodic headaches, sweating and palpitations with surges in blood pressure",
     "phenoxybenzamine followed by surgical removal", "elevated plasma free metanephrines"),
    ("gout", OLDER, "sudden overnight pain, redness and swelling at the base of the big toe",
     None, "negatively birefringent needle-shaped crystals in joint fluid"),
    ("pseudogout", OLDER, "an acutely hot, swollen knee with calcified cartilage on x-ray",
     None, "positively birefringent rhomboid crystals in joint fluid"),
    ("rheumatoid arthritis", ADULT, "symmetric swelling of the small hand joints with morning stiffness lasting over an hour",
     "methotrexate", "anti-cyclic citrullinated peptide antibodies"),
    ("systemic lupus erythematosus", YOUNG, "a rash over the cheeks that spares the nasal folds, mouth sores and aching joints",
     "hydroxychloroquine", "anti-double-stranded DNA antibodies"),
    ("ankylosing spondylitis", YOUNG, "chronic low back stiffness that is worst on waking and eases with exercise",
     None, "a positive HLA-B27 with sacroiliitis on imaging"),
    ("giant cell arteritis", OLDER, "a new temporal headache, jaw pain while chewing and scalp tenderness",
     "high-dose prednisone", "a markedly elevated erythrocyte sedimentation rate"),
    ("iron deficiency anemia", ADULT, "fatigue, pallor, spoon-shaped nails and a craving to chew ice",
     "oral ferrous sulfate", "a low ferritin with small pale red cells"),
    ("pernicious anemia", OLDER, "fatigue, a smooth sore tongue and loss of vibration sense in the feet",
     "intramuscular cyanocobalamin", "large red cells with an elevated methylmalonic acid level"),
    ("sickle cell disease", CHILD, "recurrent painful crises in the bones and chest with swollen, tender fingers",
     "hydroxyurea", "hemoglobin S on hemoglobin electrophoresis"),
    ("thrombotic thrombocytopenic purpura", ADULT, "fever, confusion, purple skin spots and reduced urine output",
     "plasma exchange", "schistocytes with severely reduced ADAMTS13 activity"),
    ("chronic myeloid leukemia", ADULT, "fatigue, early satiety and a massively enlarged spleen",
     "imatinib", "the BCR-ABL fusion gene from the Philadelphia chromosome"),
    ("Hodgkin lymphoma", YOUNG, "a painless swelling in the neck with fevers, drenching night sweats and weight loss",
     "ABVD chemotherapy", "Reed-Sternberg cells on lymph node biopsy"),
    ("multiple myeloma", OLDER, "back pain, tiredness and repeated infections",
     "bortezomib-based combination therapy", "a monoclonal spike on serum protein electrophoresis"),
    ("hemophilia A", CHILD, "recurrent bleeding into the knees and elbows after minor bumps",
     "recombinant factor VIII", "a prolonged PTT with a normal PT"),
    ("asthma", CHILD, "episodic wheezing, night-time cough and chest tightness with exercise",
     "albuterol", "an FEV1 that improves by more than 12% after a bronchodilator"),
    ("chronic obstructive pulmonary disease", OLDER,
     "worsening breathlessness on exertion and a daily productive cough after decades of smoking",
     None, "a post-bronchodilator FEV1/FVC ratio below 0.70"),
    ("pulmonary embolism", ADULT, "sudden sharp chest pain, breathlessness and a fast heart rate after a long flight",
     "enoxaparin", "a filling defect on CT angiography of the chest"),
    ("stable angina", OLDER, "chest pressure brought on by climbing stairs and relieved within minutes by rest",
     "nitroglycerin", "ST-segment depression during exercise stress testing"),
    ("atrial fibrillation", OLDER, "intermittent fluttering in the chest, fatigue and lightheadedness",
     None, "an irregular rhythm without distinct P waves on ECG"),
    ("Wolff-Parkinson-White syndrome", YOUNG, "brief episodes of a pounding rapid heartbeat that start and stop abruptly",
     "catheter ablation of the accessory pathway", "a short PR interval with a delta wave on ECG"),
    ("acute pericarditis", YOUNG, "sharp chest pain that eases when sitting up and leaning forward after a viral illness",
     None, "diffuse ST elevation with PR depression on ECG"),
    ("gastroesophageal reflux disease", ADULT, "burning pain behind the breastbone after meals that worsens when lying down",
     "omeprazole", "abnormal acid exposure on 24-hour esophageal pH monitoring"),
    ("celiac disease", YOUNG, "chronic diarrhea, bloating and an itchy blistering rash on the elbows",
     "a lifelong gluten-free diet", "IgA antibodies against tissue transglutaminase"),
    ("Crohn disease", YOUNG, "crampy right lower abdominal pain, diarrhea and fistulas around the anus",
     None, "transmural inflammation with noncaseating granulomas on biopsy"),
    ("ulcerative colitis", YOUNG, "bloody diarrhea with urgency and a constant urge to pass stool",
     "mesalamine", "continuous inflammation extending up from the rectum on colonoscopy"),
    ("acute pancreatitis", ADULT, "severe upper abdominal pain boring through to the back after heavy drinking",
     "aggressive intravenous fluid resuscitation", "a serum lipase above three times the upper limit of normal"),
    ("acute cholecystitis", ADULT, "right upper abdominal pain and fever after a fatty meal with inspiratory arrest on palpation",
     "laparoscopic cholecystectomy", "gallbladder wall thickening with surrounding fluid on ultrasound"),
    ("acute appendicitis", YOUNG, "pain that starts around the navel and moves to the right lower abdomen with nausea and fever",
     "appendectomy", None),
    ("primary biliary cholangitis", ADULT, "persistent generalized itching, fatigue and yellow fatty deposits around the eyelids",
     "ursodeoxycholic acid", "anti-mitochondrial antibodies"),
    ("Wilson disease", YOUNG, "tremor, slurred speech, mood changes and signs of liver disease",
     "penicillamine", "a low serum ceruloplasmin level"),
    ("hereditary hemochromatosis", ADULT, "bronze skin, joint pain, new-onset diabetes and an enlarged liver",
     "serial phlebotomy", "a transferrin saturation above 45% with a high ferritin"),
    ("hepatic encephalopathy", ADULT, "confusion, a flapping hand tremor and a reversed sleep cycle in a patient with cirrhosis",
     "lactulose", "an elevated blood ammonia level"),
    ("minimal change disease", CHILD, "swelling around the eyes and ankles with frothy urine",
     None, "effacement of podocyte foot processes on electron microscopy"),
    ("post-streptococcal glomerulonephritis", CHILD, "cola-colored urine and facial puffiness two weeks after a sore throat",
     None, "a low C3 complement with a raised antistreptolysin O titer"),
    ("nephrolithiasis", ADULT, "waves of severe flank pain spreading to the groin with blood in the urine",
     "tamsulosin", "envelope-shaped calcium oxalate crystals on urinalysis"),
    ("myasthenia gravis", YOUNG, "drooping eyelids and double vision that worsen as the day goes on",
     "pyridostigmine", "antibodies against the acetylcholine receptor"),
    ("multiple sclerosis", YOUNG, "painful vision loss in one eye and, months later, tingling in the legs",
     None, "oligoclonal bands in the cerebrospinal fluid"),
    ("Parkinson disease", OLDER, "a resting pill-rolling tremor, slowed movements and a shuffling gait",
     "carbidopa-levodopa", "loss of pigmented neurons in the substantia nigra"),
    ("Guillain-Barre syndrome", YOUNG, "weakness climbing from the feet upward with lost reflexes after a bout of diarrhea",
     "intravenous immunoglobulin", "a high protein with a normal cell count in the cerebrospinal fluid"),
    ("migraine", YOUNG, "a throbbing one-sided headache with nausea and sensitivity to light",
     "sumatriptan", None),
    ("cluster headache", ADULT, "nightly bouts of stabbing pain around one eye with tearing and a runny nostril",
     "high-flow oxygen", None),
    ("trigeminal neuralgia", OLDER, "brief electric shock-like jolts of facial pain set off by chewing or a light touch",
     "carbamazepine", None),
    ("childhood absence epilepsy", CHILD, "brief staring spells many times a day with no confusion afterward",
     "ethosuximide", "3-Hz spike-and-wave discharges on EEG"),
    ("Alzheimer disease", OLDER, "gradually worsening memory loss over several years with normal alertness",
     "donepezil", "extracellular amyloid plaques and neurofibrillary tangles"),
    ("Kawasaki disease", TODDLER, "five days of fever with red eyes, cracked lips, a strawberry tongue and peeling fingertips",
     None, "coronary artery aneurysms on echocardiography"),
    ("cystic fibrosis", CHILD, "recurrent chest infections, greasy foul-smelling stools and poor weight gain",
     None, "an elevated sweat chloride concentration"),
    ("pyloric stenosis", INFANT, "forceful nonbilious vomiting after every feed and an olive-shaped mass in the upper abdomen",
     "pyloromyotomy", "hypochloremic hypokalemic metabolic alkalosis"),
    ("intussusception", TODDLER, "bouts of colicky abdominal pain with drawing up of the legs and red currant jelly stools",
     "air enema reduction", "a target-shaped mass on ultrasound"),
    ("psoriasis", ADULT, "well-demarcated red plaques with silvery scale on the elbows and knees",
     "high-potency topical corticosteroids", None),
    ("benign paroxysmal positional vertigo", OLDER, "brief spinning sensations triggered by rolling over in bed",
     "the Epley maneuver", "rotatory nystagmus on the Dix-Hallpike maneuver"),
    ("acute angle-closure glaucoma", OLDER, "sudden severe eye pain, halos around lights and a fixed mid-dilated pupil",
     "intravenous acetazolamide", None),
    ("osteoporosis", OLDER, "a vertebral compression fracture after a minor fall",
     "alendronate", "a bone density T-score of -2.5 or lower"),
    ("Paget disease of bone", OLDER, "aching hips, an increasing hat size and hearing loss",
     None, "an isolated elevated alkaline phosphatase"),
    ("primary hyperparathyroidism", ADULT, "kidney stones, bone aches, abdominal pain and low mood",
     "parathyroidectomy", "a high calcium with an inappropriately high parathyroid hormone"),
    ("syndrome of inappropriate antidiuretic hormone secretion", OLDER,
     "confusion and nausea in a patient with small cell lung cancer",
     "fluid restriction", "a low serum sodium with concentrated urine"),
    ("central diabetes insipidus", YOUNG, "large volumes of dilute urine and intense thirst after a head injury",
     "desmopressin", "urine osmolality that rises after vasopressin is given"),
    ("acromegaly", ADULT, "enlarging hands and feet, coarse facial features and widening gaps between the teeth",
     None, "an elevated insulin-like growth factor 1 level"),
    ("major depressive disorder", ADULT, "two months of low mood, poor sleep, lost interest in hobbies and feelings of worthlessness",
     "sertraline", None),
    ("bipolar I disorder", YOUNG, "a week of barely sleeping, racing thoughts, grand plans and reckless spending",
     "lithium", None),
    ("schizophrenia", YOUNG, "over six months of hearing voices and believing that neighbors are spying",
     "risperidone", None),
    ("attention-deficit hyperactivity disorder", CHILD, "inattention, fidgeting and impulsive behavior both at home and at school",
     "methylphenidate", None),
    ("alcohol withdrawal", ADULT, "tremor, sweating, anxiety and a racing pulse a day after the last drink",
     "chlordiazepoxide", None),
    ("opioid overdose", YOUNG, "unresponsiveness, pinpoint pupils and slow shallow breathing",
     "naloxone", None),
    ("acetaminophen overdose", YOUNG, "nausea after swallowing a bottle of pain pills, followed days later by right-sided abdominal pain",
     "N-acetylcysteine", "markedly elevated aminotransferases"),
    ("anaphylaxis", YOUNG, "hives, lip swelling, wheezing and low blood pressure minutes after a bee sting",
     "intramuscular epinephrine", "an elevated serum tryptase"),
    ("tension pneumothorax", YOUNG, "sudden breathlessness, absent breath sounds on one side and a shifted trachea after trauma",
     "needle decompression", None),
    ("aortic dissection", OLDER, "tearing chest pain radiating to the back with unequal blood pressures in the arms",
     None, "a widened mediastinum on plain radiograph"),
    ("lead poisoning", TODDLER, "abdominal pain, irritability and lost developmental milestones while living in an old house",
     "succimer", "basophilic stippling of red blood cells"),
    ("rickets", TODDLER, "bowed legs, thickened wrists and delayed walking",
     "vitamin D supplementation", "a low phosphate with a raised alkaline phosphatase"),
    ("scurvy", ADULT, "bleeding gums, easy bruising and corkscrew-shaped hairs",
     "oral ascorbic acid", None),
    ("Wernicke encephalopathy", ADULT, "confusion, an unsteady gait and abnormal eye movements in a heavy drinker",
     "intravenous thiamine", None),
    ("carpal tunnel syndrome", ADULT, "numbness and tingling in the thumb, index and middle fingers that wakes the patient at night",
     "a neutral-position splint", "slowed median nerve conduction across the wrist"),
)

# infection, age band, causative organism. Infection names avoid words of the
# organism's name.
INFECTIONS: tuple[tuple[str, str, str], ...] = (
    ("Lyme disease", ADULT, "Borrelia burgdorferi"),
    ("syphilis", ADULT, "Treponema pallidum"),
    ("cat-scratch disease", ADULT, "Bartonella henselae"),
    ("Rocky Mountain spotted fever", ADULT, "Rickettsia rickettsii"),
    ("Q fever", ADULT, "Coxiella burnetii"),
    ("whooping cough", CHILD, "Bordetella pertussis"),
    ("scarlet fever", CHILD, "Streptococcus pyogenes"),
    ("tampon-associated toxic shock syndrome", YOUNG, "Staphylococcus aureus"),
    ("gas gangrene", ADULT, "Clostridium perfringens"),
    ("pseudomembranous colitis", ADULT, "Clostridioides difficile"),
    ("infant botulism", INFANT, "Clostridium botulinum"),
    ("tetanus", ADULT, "Clostridium tetani"),
    ("hemolytic uremic syndrome after eating undercooked hamburger", ADULT, "Escherichia coli O157:H7"),
    ("typhoid fever", ADULT, "Salmonella Typhi"),
    ("cholera", ADULT, "Vibrio cholerae"),
    ("chronic antral gastritis with a duodenal ulcer", ADULT, "Helicobacter pylori"),
    ("Legionnaires disease", ADULT, "Legionella pneumophila"),
    ("walking pneumonia", YOUNG, "Mycoplasma pneumoniae"),
    ("lobar pneumonia with rust-colored sputum", ADULT, "Streptococcus pneumoniae"),
    ("Pott disease of the spine", ADULT, "Mycobacterium tuberculosis"),
    ("Hansen disease", ADULT, "Mycobacterium leprae"),
    ("gonorrhea", ADULT, "Neisseria gonorrhoeae"),
    ("Waterhouse-Friderichsen syndrome", ADULT, "Neisseria meningitidis"),
    ("infectious mononucleosis", YOUNG, "Epstein-Barr virus"),
    ("chickenpox", CHILD, "varicella-zoster virus"),
    ("hand, foot and mouth disease", TODDLER, "coxsackievirus A"),
    ("erythema infectiosum", CHILD, "parvovirus B19"),
    ("roseola infantum", TODDLER, "human herpesvirus 6"),
    ("anogenital warts", ADULT, "human papillomavirus types 6 and 11"),
    ("Kaposi sarcoma", ADULT, "human herpesvirus 8"),
    ("bronchiolitis", INFANT, "respiratory syncytial virus"),
    ("croup", TODDLER, "parainfluenza virus"),
    ("oral thrush", ADULT, "Candida albicans"),
    ("histoplasmosis", ADULT, "Histoplasma capsulatum"),
    ("valley fever", ADULT, "Coccidioides immitis"),
    ("severe cerebral malaria", ADULT, "Plasmodium falciparum"),
    ("amebic liver abscess", ADULT, "Entamoeba histolytica"),
    ("giardiasis", ADULT, "Giardia lamblia"),
    ("Chagas disease", ADULT, "Trypanosoma cruzi"),
    ("trichomoniasis", ADULT, "Trichomonas vaginalis"),
    ("scabies", ADULT, "Sarcoptes scabiei"),
    ("subacute endocarditis after dental work", ADULT, "viridans group streptococci"),
    ("staghorn kidney stones with alkaline urine", ADULT, "Proteus mirabilis"),
    ("hot tub folliculitis", ADULT, "Pseudomonas aeruginosa"),
    ("Weil disease", ADULT, "Leptospira interrogans"),
    ("bubonic plague", ADULT, "Yersinia pestis"),
    ("tularemia", ADULT, "Francisella tularensis"),
    ("woolsorter's disease", ADULT, "Bacillus anthracis"),
    ("vomiting illness from reheated fried rice", ADULT, "Bacillus cereus"),
    ("pinworm infection", CHILD, "Enterobius vermicularis"),
    ("neurocysticercosis", ADULT, "Taenia solium"),
    ("rhinocerebral mucormycosis", ADULT, "Rhizopus species"),
    ("lymphogranuloma venereum", ADULT, "Chlamydia trachomatis"),
)

# drug, class (with its article), mechanism of action, characteristic adverse effect
DRUGS: tuple[tuple[str, str | None, str | None, str | None], ...] = (
    ("lisinopril", "an ACE inhibitor", "inhibition of angiotensin-converting enzyme", "a persistent dry cough"),
    ("losartan", "an angiotensin II receptor blocker", "blockade of the angiotensin II type 1 receptor", None),
    ("metoprolol", "a cardioselective beta blocker", "selective blockade of beta-1 adrenergic receptors", "bradycardia"),
    ("amlodipine", "a dihydropyridine calcium channel blocker",
     "blockade of L-type calcium channels in arterial smooth muscle", "ankle swelling"),
    ("hydrochlorothiazide", "a thiazide diuretic",
     "inhibition of the sodium-chloride cotransporter in the distal convoluted tubule", "hypercalcemia"),
    ("furosemide", "a loop diuretic", "inhibition of the Na-K-2Cl cotransporter in the thick ascending limb", "ototoxicity"),
    ("spironolactone", "a potassium-sparing diuretic", "antagonism of the aldosterone receptor", "gynecomastia"),
    ("digoxin", "a cardiac glycoside", "inhibition of the sodium-potassium ATPase in cardiac myocytes",
     "yellow-green tinted vision"),
    ("amiodarone", "a class III antiarrhythmic", "blockade of potassium channels that prolongs repolarization",
     "pulmonary fibrosis"),
    ("warfarin", "a vitamin K antagonist", "inhibition of vitamin K epoxide reductase",
     "skin necrosis in the first days of therapy"),
    ("enoxaparin", "a low-molecular-weight heparin", "antithrombin-mediated inhibition of factor Xa",
     "heparin-induced thrombocytopenia"),
    ("apixaban", "a direct factor Xa inhibitor", "direct binding and inhibition of factor Xa", None),
    ("clopidogrel", "a P2Y12 receptor antagonist", "irreversible blockade of the platelet ADP receptor", None),
    ("atorvastatin", "a statin", "inhibition of HMG-CoA reductase", "myopathy with a raised creatine kinase"),
    ("metformin", "a biguanide", "reduced hepatic glucose production through AMP kinase activation", "lactic acidosis"),
    ("glipizide", "a sulfonylurea", "closure of ATP-sensitive potassium channels on pancreatic beta cells",
     "hypoglycemia"),
    ("pioglitazone", "a thiazolidinedione", "activation of the nuclear receptor PPAR-gamma",
     "fluid retention with worsening heart failure"),
    ("empagliflozin", "an SGLT2 inhibitor", "inhibition of sodium-glucose cotransporter 2 in the proximal tubule",
     "genital yeast infections"),
    ("methimazole", "a thionamide", "inhibition of thyroid peroxidase", None),
    ("allopurinol", "a xanthine oxidase inhibitor", "inhibition of xanthine oxidase", None),
    ("colchicine", None, "inhibition of microtubule polymerization in neutrophils", "diarrhea"),
    ("naproxen", "a nonsteroidal anti-inflammatory drug", "reversible inhibition of cyclooxygenase-1 and -2",
     "gastric ulceration"),
    ("methotrexate", "an antifolate", "inhibition of dihydrofolate reductase", "oral mucositis"),
    ("hydroxychloroquine", "an antimalarial", None, "retinal toxicity"),
    ("omeprazole", "a proton pump inhibitor", "irreversible inhibition of the parietal cell H+/K+ ATPase",
     "hypomagnesemia"),
    ("ondansetron", "a 5-HT3 receptor antagonist", "blockade of serotonin 5-HT3 receptors", None),
    ("sumatriptan", "a triptan", "agonism at serotonin 5-HT1B/1D receptors", "coronary vasospasm"),
    ("sertraline", "a selective serotonin reuptake inhibitor", "selective inhibition of serotonin reuptake",
     "sexual dysfunction"),
    ("lithium", "a mood stabilizer", None, "nephrogenic diabetes insipidus"),
    ("haloperidol", "a typical antipsychotic", "strong blockade of dopamine D2 receptors", "tardive dyskinesia"),
    ("risperidone", "an atypical antipsychotic", "combined blockade of serotonin 5-HT2A and dopamine D2 receptors",
     "hyperprolactinemia"),
    ("clozapine", None, None, "agranulocytosis"),
    ("methylphenidate", "a central nervous system stimulant", "blockade of dopamine and norepinephrine reuptake",
     "reduced appetite"),
    ("chlordiazepoxide", "a benzodiazepine", "increased frequency of GABA-A chloride channel opening", None),
    ("carbamazepine", "an anticonvulsant", "blockade of voltage-gated sodium channels", "Stevens-Johnson syndrome"),
    ("ethosuximide", None, "blockade of T-type calcium channels in thalamic neurons", None),
    ("phenytoin", None, None, "gingival overgrowth"),
    ("valproate", None, None, "neural tube defects after exposure in pregnancy"),
    ("donepezil", "an acetylcholinesterase inhibitor", "reversible inhibition of acetylcholinesterase in the brain", None),
    ("albuterol", "a short-acting beta-2 agonist", "stimulation of beta-2 receptors in bronchial smooth muscle", "tremor"),
    ("tiotropium", "a long-acting muscarinic antagonist", "blockade of M3 muscarinic receptors in the airways",
     "dry mouth"),
    ("isoniazid", None, "inhibition of mycolic acid synthesis", "peripheral neuropathy"),
    ("rifampin", "a rifamycin antibiotic", "inhibition of bacterial DNA-dependent RNA polymerase",
     "orange discoloration of urine and tears"),
    ("ethambutol", None, "inhibition of arabinosyl transferase", "optic neuritis with red-green color loss"),
    ("vancomycin", "a glycopeptide antibiotic", "binding D-Ala-D-Ala to block cell wall synthesis",
     "flushing of the upper body during rapid infusion"),
    ("amoxicillin", "an aminopenicillin", "binding penicillin-binding proteins to block cell wall cross-linking", None),
    ("gentamicin", "an aminoglycoside", "binding the 30S subunit to cause misreading of mRNA", None),
    ("doxycycline", "a tetracycline", "binding the 30S subunit to block aminoacyl-tRNA attachment",
     "tooth discoloration in young children"),
    ("azithromycin", "a macrolide", "binding the 50S subunit to block translocation", None),
    ("ciprofloxacin", "a fluoroquinolone", "inhibition of DNA gyrase and topoisomerase IV", "Achilles tendon rupture"),
    ("metronidazole", "a nitroimidazole", "formation of toxic free radicals that damage DNA",
     "a disulfiram-like reaction with alcohol"),
    ("acyclovir", "a guanosine analog antiviral",
     "inhibition of viral DNA polymerase after activation by viral thymidine kinase", "crystal-induced kidney injury"),
    ("fluconazole", "an azole antifungal", "inhibition of fungal ergosterol synthesis at 14-alpha-demethylase", None),
    ("amphotericin B", "a polyene antifungal", "binding ergosterol to form pores in fungal membranes",
     "kidney toxicity with potassium wasting"),
    ("oseltamivir", "a neuraminidase inhibitor", "inhibition of viral neuraminidase", None),
    ("morphine", "an opioid agonist", "activation of mu-opioid receptors", "constipation"),
    ("naloxone", "an opioid antagonist", "competitive blockade of mu-opioid receptors", "precipitated opioid withdrawal"),
    ("nitroglycerin", "an organic nitrate", "release of nitric oxide that raises cGMP in venous smooth muscle",
     "a throbbing headache"),
    ("sildenafil", "a phosphodiesterase-5 inhibitor", "inhibition of cGMP breakdown by phosphodiesterase 5",
     "blue-tinted vision"),
    ("tamsulosin", "an alpha-1 blocker", "selective blockade of alpha-1A receptors in prostate and ureter smooth muscle",
     "dizziness on standing"),
    ("clonidine", "a central alpha-2 agonist", "stimulation of alpha-2 receptors in the brainstem",
     "rebound hypertension after abrupt withdrawal"),
    ("alendronate", "a bisphosphonate", "inhibition of osteoclast-mediated bone resorption", "pill esophagitis"),
    ("desmopressin", "a vasopressin analog", "activation of V2 receptors in the collecting duct", "hyponatremia"),
    ("cyclophosphamide", "an alkylating agent", "cross-linking of DNA strands", "hemorrhagic cystitis"),
    ("doxorubicin", "an anthracycline", "DNA intercalation with topoisomerase II inhibition", "dilated cardiomyopathy"),
    ("imatinib", "a tyrosine kinase inhibitor", "inhibition of the BCR-ABL tyrosine kinase", None),
    ("hydroxyurea", "a ribonucleotide reductase inhibitor", "inhibition of ribonucleotide reductase", None),
    ("mesalamine", "an aminosalicylate", None, None),
)


def _flatten() -> tuple[Fact, ...]:
    facts: list[Fact] = []

    def add(relation: Relation, subject: str, value: str | None) -> None:
        # A missing value means the fact was left out on purpose (see module docstring).
        if value is not None:
            facts.append(Fact(relation, subject, value, relation.value))

    for disease, _band, presentation, treatment, finding in DISEASES:
        add(Relation.PRESENTATION, disease, presentation)
        add(Relation.TREATMENT, disease, treatment)
        add(Relation.FINDING, disease, finding)
    for infection, _band, organism in INFECTIONS:
        add(Relation.ORGANISM, infection, organism)
    for drug, drug_class, mechanism, adverse in DRUGS:
        add(Relation.DRUG_CLASS, drug, drug_class)
        add(Relation.MECHANISM, drug, mechanism)
        add(Relation.ADVERSE_EFFECT, drug, adverse)
    return tuple(facts)


FACTS: tuple[Fact, ...] = _flatten()
AGE_BAND: dict[str, str] = {
    **{disease: band for disease, band, *_ in DISEASES},
    **{infection: band for infection, band, _ in INFECTIONS},
}
